"""Multi-volume series built with pydicom from the shared STS MR series: 4-D assembly, series
splitting, refusals, per-volume sidecar values, bval/bvec, masks on a 4-D image.

Expected values come from how each case is built (the pixel offset planted per volume, the
gradient planted per volume), never from the converter.
"""

from __future__ import annotations

import copy
import json
import os
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import generate_uid

from biomarkers.dicom.ingest import IngestSettings, run_ingest

from dcm_qa import bvec_world, read_table

MR = "STS_001/MR_T1"


def _slices(shared_data, n: int | None = 6) -> list[pydicom.Dataset]:
    """``n`` consecutive middle slices of the STS_001 MR series (all when None), by position."""
    ds = [pydicom.dcmread(p) for p in sorted((shared_data / "sts" / "dicom" / MR / "image").iterdir())]
    ds.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    if n is None:
        return ds
    mid = len(ds) // 2
    return ds[mid - n // 2: mid - n // 2 + n]


def _write(folder: Path, datasets: list[pydicom.Dataset], shuffle: bool = True) -> None:
    """Write copies under new SOP Instance UIDs, instance numbers in acquisition order, files in random order."""
    folder.mkdir(parents=True, exist_ok=True)
    order = list(range(len(datasets)))
    if shuffle:
        random.Random(0).shuffle(order)
    for n, i in enumerate(order):
        datasets[i].save_as(folder / f"f{n:04d}.dcm", enforce_file_format=True)


def _copy(d: pydicom.Dataset, instance: int, offset: int = 0, keep_uid: bool = False, **attrs) -> pydicom.Dataset:
    """A copy of slice ``d``: new SOP Instance UID (unless ``keep_uid``), ``instance`` number,
    stored values + ``offset``, and the given attributes."""
    c = copy.deepcopy(d)
    if not keep_uid:
        c.SOPInstanceUID = generate_uid()
        c.file_meta.MediaStorageSOPInstanceUID = c.SOPInstanceUID
    c.InstanceNumber = instance
    if offset:
        info = np.iinfo(c.pixel_array.dtype)
        c.PixelData = np.clip(c.pixel_array.astype(np.int64) + offset, info.min, info.max).astype(info.dtype).tobytes()
    for k, v in attrs.items():
        setattr(c, k, v)
    return c


def _ingest(src: Path, out: Path) -> pd.DataFrame:
    run_ingest(src, out, IngestSettings(index_cache="off"), executor="serial")
    df = pd.read_parquet(out / "manifest.parquet")
    return df[df.kind == "image"].sort_values("stack").reset_index(drop=True)


def _original(shared_data, n=6) -> np.ndarray:
    """The slices' stored values as [i, j, k] (column, row, slice along +z: the normal of this axial series)."""
    return np.stack([d.pixel_array for d in _slices(shared_data, n)]).transpose(2, 1, 0).astype(np.int64)


def test_dynamic_series_by_temporal_position(shared_data, tmp_path):
    """Three volumes with TemporalPositionIdentifier 3, 1, 2 in acquisition (instance) order: the
    4th axis follows the temporal position, not the instance numbers or file order."""
    sl = _slices(shared_data)
    cases = []
    for v, tp in enumerate((3, 1, 2)):
        cases += [_copy(d, v * len(sl) + k + 1, offset=100 * tp, TemporalPositionIdentifier=tp,
                        NumberOfTemporalPositions=3) for k, d in enumerate(sl)]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert len(rows) == 1 and rows.status[0] == "converted", rows.to_string()
    assert rows.volumes[0] == 3 and rows["shape"][0] == "174 x 158 x 6 x 3"
    img = nib.load(str(tmp_path / "out" / rows.path[0]))
    arr = np.asanyarray(img.dataobj).astype(np.int64)
    base = _original(shared_data)
    for t in range(3):
        assert np.array_equal(arr[..., t], base + 100 * (t + 1)), t
    side = json.loads((tmp_path / "out" / rows.path[0].replace(".nii.gz", ".json")).read_text())
    assert side["volumes"]["temporal_position"] == [1, 2, 3]
    assert side["volumes"]["ordered_by"] == "TemporalPositionIdentifier"
    assert side["geometry"]["shape"] == [174, 158, 6]  # the grid of one volume


def test_two_echoes_are_two_outputs(shared_data, tmp_path):
    sl = _slices(shared_data)
    cases = [_copy(d, k + 1, EchoNumbers=1, EchoTime=10.0) for k, d in enumerate(sl)]
    cases += [_copy(d, len(sl) + k + 1, offset=7, EchoNumbers=2, EchoTime=20.0) for k, d in enumerate(sl)]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert rows["stack"].tolist() == ["", "#e2"] and (rows.status == "converted").all(), rows.to_string()
    assert rows.path[1].endswith("_e2.nii.gz") and (rows.volumes == 1).all()
    e1, e2 = (np.asanyarray(nib.load(str(tmp_path / "out" / p)).dataobj).astype(np.int64) for p in rows.path)
    assert np.array_equal(e1, _original(shared_data)) and np.array_equal(e2, e1 + 7)
    side = json.loads((tmp_path / "out" / rows.path[1].replace(".nii.gz", ".json")).read_text())
    assert side["acquisition"]["echo_time_ms"] == 20.0 and side["stack"] == "#e2"


def test_phase_images_are_a_separate_output(shared_data, tmp_path):
    sl = _slices(shared_data)
    cases = [_copy(d, k + 1, ImageType=["ORIGINAL", "PRIMARY", "M", "ND"]) for k, d in enumerate(sl)]
    cases += [_copy(d, 10 + k, ImageType=["ORIGINAL", "PRIMARY", "P", "ND"]) for k, d in enumerate(sl)]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert rows["stack"].tolist() == ["", "#ph"] and rows.path[1].endswith("_ph.nii.gz"), rows.to_string()


def test_one_uid_two_series_numbers(shared_data, tmp_path):
    """Two series sharing a SeriesInstanceUID (same positions) but not their SeriesNumber: two stacks."""
    sl = _slices(shared_data)
    cases = [_copy(d, k + 1, SeriesNumber=7) for k, d in enumerate(sl)]
    cases += [_copy(d, k + 1, offset=3, SeriesNumber=8) for k, d in enumerate(sl)]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert rows["stack"].tolist() == ["", "#2"] and (rows.status == "converted").all(), rows.to_string()
    a, b = (np.asanyarray(nib.load(str(tmp_path / "out" / p)).dataobj).astype(np.int64) for p in rows.path)
    assert np.array_equal(a, _original(shared_data)) and np.array_equal(b, a + 3)  # SeriesNumber 7 first


def test_unexplained_repeats_are_refused_naming_positions(shared_data, tmp_path):
    sl = _slices(shared_data, 3)
    cases = [_copy(d, k + 1) for k, d in enumerate(sl)] + [_copy(d, 4 + k, offset=1) for k, d in enumerate(sl)]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert len(rows) == 1 and rows.status[0] == "skipped"
    z = ", ".join(f"{float(d.ImagePositionPatient[2]):.1f}" for d in sl)
    assert rows.reason[0] == (f"duplicate slice positions: 3 positions repeat (at {z} mm along the slice normal) "
                              "and no temporal/diffusion/echo attribute explains them"), rows.reason[0]
    assert "duplicate_positions" in rows.qc_flags[0]


def test_diffusion_with_repeated_b0_gets_bval_bvec(shared_data, tmp_path):
    """Standard DiffusionBValue / DiffusionGradientOrientation, two b=0 volumes: ordered by
    InstanceNumber; bvecs map back (through the NIfTI's own affine, FSL convention) to the
    planted LPS directions."""
    sl = _slices(shared_data, 4)
    planted = [(0, (0, 0, 0)), (1000, (1, 0, 0)), (0, (0, 0, 0)), (1000, (0, 0.6, 0.8)), (700, (0.6, 0, -0.8))]
    cases = []
    for v, (b, g) in enumerate(planted):
        cases += [_copy(d, v * 4 + k + 1, offset=v, DiffusionBValue=float(b),
                        DiffusionGradientOrientation=[float(x) for x in g]) for k, d in enumerate(sl)]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert rows.status[0] == "converted" and rows.volumes[0] == 5, rows.to_string()
    nii = tmp_path / "out" / rows.path[0]
    arr = np.asanyarray(nib.load(str(nii)).dataobj).astype(np.int64)
    assert [int(arr[..., t].sum() - arr[..., 0].sum()) for t in range(5)] == [t * arr[..., 0].size for t in range(5)]
    stem = nii.with_name(nii.name[: -len(".nii.gz")])
    assert read_table(stem.with_suffix(".bval")).ravel().tolist() == [b for b, _ in planted]
    ras = bvec_world(read_table(stem.with_suffix(".bvec")), nib.load(str(nii)).affine)
    np.testing.assert_allclose(ras * [-1, -1, 1], [g for _, g in planted], atol=1e-6)  # RAS -> LPS
    side = json.loads(stem.with_suffix(".json").read_text())["volumes"]
    assert side["dimension"] == "diffusion" and side["b_value"] == [0.0, 1000.0, 0.0, 1000.0, 700.0]


@pytest.fixture(scope="module")
def four_d(shared_data, tmp_path_factory) -> Path:
    """The STS_001 MR series as two volumes (AcquisitionNumber 1, 2; volume 2 = volume 1 + 5) with
    its RTSTRUCT, which references the original instances (kept as volume 1), ingested."""
    tmp = tmp_path_factory.mktemp("four_d")
    sl = _slices(shared_data, None)
    cases = [_copy(d, k + 1, keep_uid=True, AcquisitionNumber=1) for k, d in enumerate(sl)]
    cases += [_copy(d, len(sl) + k + 1, offset=5, AcquisitionNumber=2) for k, d in enumerate(sl)]
    _write(tmp / "src" / "image", cases, shuffle=False)
    rt = next((shared_data / "sts" / "dicom" / MR / "mask").iterdir())
    (tmp / "src" / "mask").mkdir()
    (tmp / "src" / "mask" / rt.name).write_bytes(rt.read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOMARKERS_SECRET", "test-secret-0123456789abcdef")
        run_ingest(tmp / "src", tmp / "out", IngestSettings(index_cache="off"), executor="serial")
    return tmp / "out"


def test_rtstruct_on_4d_series_gives_3d_mask(four_d, shared_data):
    n = len(_slices(shared_data, None))
    df = pd.read_parquet(four_d / "manifest.parquet")
    image = df[df.kind == "image"].iloc[0]
    mask = df[df.kind == "mask"].iloc[0]
    assert image.volumes == 2 and image["shape"] == f"174 x 158 x {n} x 2"
    assert mask.status == "converted", mask.reason
    assert mask.volumes == 1 and mask["shape"] == f"174 x 158 x {n}" and mask.image_path == image.path
    m = nib.load(str(four_d / mask.path))
    i = nib.load(str(four_d / image.path))
    assert m.shape == i.shape[:3] and np.array_equal(m.affine, i.affine) and int(np.asarray(m.dataobj).sum()) > 0


def _extract(dataset: Path, out: Path, volumes=None) -> pd.DataFrame:
    import yaml

    from biomarkers.features.extract import run_extract

    params = {"setting": {"binWidth": 25}, "imageType": {"Original": {}}, "featureClass": {"firstorder": ["Mean"]}}
    if volumes is not None:
        params["volumes"] = volumes
    out.mkdir(parents=True)
    (out / "mr.yaml").write_text(yaml.safe_dump(params))
    report = run_extract(dataset, {"MR": str(out / "mr.yaml")}, out / "features", executor="serial")
    assert report.counts()["failed"] == 0, report.summary()
    return pd.read_parquet(out / "features" / "features_wide.parquet")


def test_features_per_volume(four_d, tmp_path):
    """``volumes: all``: one wide row per volume (key column ``volume``); the planted +5 offset
    of volume 1 shifts the ROI mean by exactly 5."""
    wide = _extract(four_d, tmp_path / "all", "all")
    assert wide["volume"].tolist() == [0, 1]
    mean = wide["original_firstorder_Mean"].to_numpy()
    assert mean[1] - mean[0] == pytest.approx(5.0, abs=1e-9)
    first = _extract(four_d, tmp_path / "first")  # default: the first volume, still keyed by volume
    assert first["volume"].tolist() == [0] and first["original_firstorder_Mean"][0] == mean[0]
    picked = _extract(four_d, tmp_path / "picked", [1])
    assert picked["volume"].tolist() == [1] and picked["original_firstorder_Mean"][0] == mean[1]


def test_volume_not_in_image_is_skipped_with_reason(four_d, tmp_path):
    import yaml

    from biomarkers.features.extract import Extract

    params = {"imageType": {"Original": {}}, "featureClass": {"firstorder": ["Mean"]}, "volumes": [0, 3]}
    (tmp_path / "mr.yaml").write_text(yaml.safe_dump(params))
    plan = Extract(four_d, {"MR": str(tmp_path / "mr.yaml")}, tmp_path / "f", executor="serial").plan(dry_run=True)
    assert [it.volume for it in plan.items] == [0]
    assert [p.reason for p in plan.problems] == [
        "volume 3 selected by mr (volumes: [0, 3]) is not in the image (2 volumes)"]


def test_volumes_setting_is_validated(tmp_path):
    import yaml

    from biomarkers.errors import ConfigError
    from biomarkers.features.params import load_params

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"imageType": {"Original": {}}, "volumes": "last"}))
    with pytest.raises(ConfigError, match=r"bad.yaml: volumes: must be 'first', 'all' or a list"):
        load_params(tmp_path / "bad.yaml")


def test_incomplete_volume_is_refused_not_split(shared_data, tmp_path):
    """Three volumes (AcquisitionNumber 1-3), the last missing a slice: refused with the reason,
    never written as three 3-D acquisitions."""
    sl = _slices(shared_data, 3)
    cases = [_copy(d, v * 3 + k + 1, AcquisitionNumber=v + 1) for v in range(3) for k, d in enumerate(sl)][:-1]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert len(rows) == 1 and rows.status[0] == "skipped", rows.to_string()
    assert rows.reason[0].startswith("duplicate slice positions: 3 positions repeat (at ") and rows.reason[0].endswith(
        "mm along the slice normal) unequally (2 to 3 frames per position): incomplete volumes or overlapping acquisitions")


def test_separate_acquisitions_with_distinct_ranges_stay_separate_stacks(shared_data, tmp_path):
    """Two acquisitions of one series over overlapping, different slice ranges: two 3-D stacks (as before)."""
    sl = _slices(shared_data, 5)
    cases = [_copy(d, k + 1, AcquisitionNumber=1) for k, d in enumerate(sl[:3])]
    cases += [_copy(d, 10 + k, AcquisitionNumber=2) for k, d in enumerate(sl[1:])]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert rows["stack"].tolist() == ["", "#2"] and (rows.status == "converted").all(), rows.to_string()
    assert rows["shape"].tolist() == ["174 x 158 x 4", "174 x 158 x 3"]


def test_dynamic_pet_frames(shared_data, tmp_path):
    """Two PET frames (FrameReferenceTime 360 s acquired first by instance number, then 120 s):
    volumes follow the frame reference time; per-volume frame times are relative, no time of day."""
    pet = sorted((shared_data / "sts" / "dicom" / "STS_001" / "PET" / "image").iterdir())
    sl = sorted((pydicom.dcmread(p) for p in pet), key=lambda d: float(d.ImagePositionPatient[2]))[20:24]
    cases = [_copy(d, k + 1, offset=2, FrameReferenceTime=360000.0, ActualFrameDuration=240000,
                   AcquisitionTime="112411.00") for k, d in enumerate(sl)]
    cases += [_copy(d, 10 + k, FrameReferenceTime=120000.0, ActualFrameDuration=240000, AcquisitionTime="112011.00")
              for k, d in enumerate(sl)]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert rows.status[0] == "converted" and rows.volumes[0] == 2, rows.to_string()
    side_path = tmp_path / "out" / rows.path[0].replace(".nii.gz", ".json")
    vols = json.loads(side_path.read_text())["volumes"]
    assert vols["ordered_by"] == "FrameReferenceTime" and vols["frame_reference_time_ms"] == [120000.0, 360000.0]
    assert vols["frame_duration_ms"] == [240000.0, 240000.0] and vols["start_s"] == [0.0, 240.0]
    text = side_path.read_text()
    assert "1120" not in text and "1124" not in text  # no acquisition time of day
    arr = np.asanyarray(nib.load(str(tmp_path / "out" / rows.path[0])).dataobj)
    for k, d in enumerate(sl):  # stored values + 2 (clipped) in the 360 s frame, times each slice's own slope
        stored = d.pixel_array.astype(np.int64)
        plus = np.clip(stored + 2, None, np.iinfo(d.pixel_array.dtype).max) - stored
        np.testing.assert_allclose(arr[:, :, k, 1] - arr[:, :, k, 0], (plus * float(d.RescaleSlope)).T,
                                   atol=1e-6 * float(np.abs(arr).max()))


def test_isotropic_trace_volume_is_left_out(shared_data, tmp_path):
    """A b=1000 volume without direction (Philips' isotropic trace image) is not a diffusion
    direction: left out of the 4-D image and the bval/bvec (as dcm2niix), counted in the sidecar QC."""
    sl = _slices(shared_data, 3)
    planted = [(0, (0, 0, 0)), (1000, (1, 0, 0)), (1000, (0, 1, 0)), (1000, (0, 0, 0))]
    cases = [_copy(d, v * 3 + k + 1, DiffusionBValue=float(b), DiffusionGradientOrientation=[float(x) for x in g])
             for v, (b, g) in enumerate(planted) for k, d in enumerate(sl)]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert rows.volumes[0] == 3, rows.to_string()
    stem = (tmp_path / "out" / rows.path[0]).with_name(Path(rows.path[0]).name[: -len(".nii.gz")])
    assert read_table(stem.with_suffix(".bval")).ravel().tolist() == [0, 1000, 1000]
    assert json.loads(stem.with_suffix(".json").read_text())["qc"]["removed_isotropic_volumes"] == 1


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_seg_on_second_volume_gives_3d_mask(shared_data, tmp_path):
    """A DICOM SEG (highdicom) drawn on the instances of the second volume of a two-volume
    series: a 3-D mask on the 4-D image's grid, voxels where they were drawn."""
    from test_masks_seg import build_seg

    sl = _slices(shared_data)
    vols = [[_copy(d, v * 6 + k + 1, TemporalPositionIdentifier=v + 1) for k, d in enumerate(sl)] for v in range(2)]
    _write(tmp_path / "src" / "image", vols[0] + vols[1])
    drawn = np.zeros((174, 158, 6), np.uint8)
    drawn[60:90, 50:80, 2:4] = 1
    (tmp_path / "src" / "seg").mkdir()
    build_seg(tmp_path / "src" / "seg" / "seg.dcm", vols[1], [drawn], ["GTV"])
    run_ingest(tmp_path / "src", tmp_path / "out", IngestSettings(index_cache="off"), executor="serial")
    df = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    mask = df[df.kind == "mask"].iloc[0]
    assert mask.status == "converted", mask.reason
    assert mask["shape"] == "174 x 158 x 6" and df[df.kind == "image"].iloc[0]["shape"] == "174 x 158 x 6 x 2"
    assert np.array_equal(np.asarray(nib.load(str(tmp_path / "out" / mask.path)).dataobj), drawn)


def test_echoes_told_apart_by_echo_time_alone(shared_data, tmp_path):
    """Two echoes without EchoNumbers (only EchoTime differs, positions repeat): two outputs, as dcm2niix."""
    sl = _slices(shared_data, 3)
    cases = [_copy(d, k + 1, EchoTime=30.0) for k, d in enumerate(sl)]
    cases += [_copy(d, 4 + k, offset=1, EchoTime=9.5) for k, d in enumerate(sl)]
    for c in cases:
        if "EchoNumbers" in c:
            del c.EchoNumbers
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert rows["stack"].tolist() == ["", "#e2"] and (rows.status == "converted").all(), rows.to_string()
    e1, e2 = (np.asanyarray(nib.load(str(tmp_path / "out" / p)).dataobj).astype(np.int64) for p in rows.path)
    assert np.array_equal(e2, e1 - 1)  # echo 1 is the shorter TE (9.5 ms, planted +1)


def test_siemens_dwi_mosaic_takes_b_value_and_direction_from_csa():
    """A DWI mosaic without (0019,100c)/(0019,100e): every slice gets the CSA header's B_value and
    DiffusionGradientDirection (LPS); b=0 means no direction."""
    from biomarkers.dicom.model import DicomFile
    from biomarkers.dicom.mosaic import mosaic_frames

    base = DicomFile(Path("m.dcm"), "m.dcm", "1.2.840.10008.5.1.4.1.1.4", "1.2.3", "MR", "P", "S", "SE", rows=128,
                     columns=128, pixel_spacing=(2.0, 2.0), image_orientation=(1, 0, 0, 0, 1, 0),
                     image_position=(0.0, 0.0, 0.0), slice_thickness=3.0)
    csa = {"NumberOfImagesInMosaic": ["4"], "SliceNormalVector": ["0", "0", "1"], "B_value": ["1000"],
           "DiffusionGradientDirection": ["0.6", "-0.8", "0"]}
    tiles = mosaic_frames(base, csa, 3.0)
    assert [(t.b_value, t.gradient) for t in tiles] == [(1000.0, (0.6, -0.8, 0.0))] * 4
    tiles = mosaic_frames(base, {**csa, "B_value": ["0"]}, 3.0)
    assert {(t.b_value, t.gradient) for t in tiles} == {(0.0, (0.0, 0.0, 0.0))}


def test_4d_with_a_gap_and_allow_gaps(shared_data, tmp_path):
    """Every volume misses the same slice: skipped as missing slices, or with ``allow_gaps`` filled
    in each volume by linear interpolation (the mean of its neighbours here)."""
    sl = _slices(shared_data, 5)
    kept = [d for k, d in enumerate(sl) if k != 2]
    cases = [_copy(d, v * 4 + k + 1, offset=10 * v, TemporalPositionIdentifier=v + 1)
             for v in range(2) for k, d in enumerate(kept)]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "skip")
    assert rows.status[0] == "skipped" and rows.reason[0].startswith("missing slices"), rows.to_string()
    run_ingest(tmp_path / "src", tmp_path / "out", IngestSettings(index_cache="off", allow_gaps=True), executor="serial")
    row = pd.read_parquet(tmp_path / "out" / "manifest.parquet").iloc[0]
    assert row.status == "converted" and row["shape"] == "174 x 158 x 5 x 2" and "missing_slices" in row.qc_flags
    arr = np.asanyarray(nib.load(str(tmp_path / "out" / row.path)).dataobj).astype(np.float64)
    base = _original(shared_data, 5).astype(np.float64)
    for t in range(2):
        np.testing.assert_allclose(arr[:, :, [0, 1, 3, 4], t], base[:, :, [0, 1, 3, 4]] + 10 * t)
        np.testing.assert_allclose(arr[:, :, 2, t], np.rint((base[:, :, 1] + base[:, :, 3]) / 2) + 10 * t, atol=1)


def test_diffusion_without_directions_writes_no_bvec(shared_data, tmp_path):
    """b-values without gradient directions: the 4-D image is written, but no .bval/.bvec (zero
    vectors would look valid); the sidecar QC says why."""
    sl = _slices(shared_data, 3)
    cases = [_copy(d, v * 3 + k + 1, DiffusionBValue=b) for v, b in enumerate((0.0, 1000.0, 1000.0))
             for k, d in enumerate(sl)]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert rows.status[0] == "converted" and rows.volumes[0] == 3, rows.to_string()
    nii = tmp_path / "out" / rows.path[0]
    stem = nii.with_name(nii.name[: -len(".nii.gz")])
    assert not stem.with_suffix(".bval").exists() and not stem.with_suffix(".bvec").exists()
    side = json.loads(stem.with_suffix(".json").read_text())
    assert side["qc"]["diffusion_directions_unknown"] is True and side["volumes"]["b_value"] == [0.0, 1000.0, 1000.0]


def test_trace_marked_isotropic_is_left_out(shared_data, tmp_path):
    """A b=1000 volume with DiffusionDirectionality ISOTROPIC and no gradient: a trace image, left out."""
    sl = _slices(shared_data, 2)
    cases = []
    for v, (b, g) in enumerate([(0.0, None), (1000.0, (1.0, 0.0, 0.0)), (1000.0, (0.0, 1.0, 0.0)), (1000.0, None)]):
        for k, d in enumerate(sl):
            c = _copy(d, v * 2 + k + 1, DiffusionBValue=b,
                      DiffusionDirectionality="ISOTROPIC" if g is None and b else "DIRECTIONAL" if g else "NONE")
            if g is not None:
                c.DiffusionGradientOrientation = list(g)
            cases.append(c)
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    assert rows.volumes[0] == 3, rows.to_string()
    nii = tmp_path / "out" / rows.path[0]
    stem = nii.with_name(nii.name[: -len(".nii.gz")])
    assert read_table(stem.with_suffix(".bval")).ravel().tolist() == [0, 1000, 1000]


@pytest.mark.parametrize("raw, pe, sign, iop, lps", [
    # axial (normal +z), COL phase encoding, slices acquired along the normal: dcm2niix's bvec in its
    # frame (row, -column, normal) is (-x, y, z), i.e. LPS -x*row - y*column + z*normal
    ((0.6, 0.8, 0.0), "COL", 1, (1, 0, 0, 0, 1, 0), (-0.6, -0.8, 0.0)),
    ((0.0, 0.0, 1.0), "COL", 1, (1, 0, 0, 0, 1, 0), (0.0, 0.0, 1.0)),
    ((0.0, 0.0, 1.0), "COL", -1, (1, 0, 0, 0, 1, 0), (0.0, 0.0, -1.0)),  # descending: z toggled
    ((0.6, 0.8, 0.0), "ROW", 1, (1, 0, 0, 0, 1, 0), (-0.8, 0.6, 0.0)),  # ROW: (y, -x, z) first
    # coronal (row +x, column -z, normal +y): y, z negated, then y and all: (-x, -y, z) in that frame
    ((0.6, 0.0, 0.8), "COL", 1, (1, 0, 0, 0, 0, -1), (-0.6, 0.8, 0.0)),
])
def test_ge_vectors_as_dcm2niix(raw, pe, sign, iop, lps):
    from biomarkers.dicom.dims import ge_to_patient

    np.testing.assert_allclose(ge_to_patient(raw, iop, pe, sign), lps, atol=1e-12)
    assert ge_to_patient(raw, iop, "", sign) is None  # phase encoding unknown: no direction


def test_ge_multishell_b_value_scaled_by_vector_length():
    """GE tensor files encode lower shells by shorter vectors: b = b_max * |v|^2 and v normalised
    (dcm2niix); the standard DiffusionBValue (b_max) does not override it."""
    from biomarkers.dicom.dims import diffusion

    hdr = {"Manufacturer": "GE MEDICAL SYSTEMS", "DiffusionBValue": 3000.0, "GE_SlopInt_6_9": ["1000003000", "8", "0", "0"],
           "GE_UserData20": "0.5", "GE_UserData21": "0", "GE_UserData22": "0.5"}
    b, g, ge = diffusion(hdr.get)
    assert g is None and b == pytest.approx(3000 * 0.5) and np.allclose(ge, (2 ** -0.5, 0, 2 ** -0.5))


@pytest.mark.parametrize("maker", ["Philips Medical Systems", "SIEMENS", "Canon Medical Systems", ""])
def test_ge_private_elements_are_not_read_in_other_vendors_files(maker):
    """(0043,1039) / (0019,10bb..bd) / (0043,102f) are GE's only in GE files (Manufacturer, as dcm2niix):
    the same numbers in another vendor's file are not a b-value, a direction or a phase image."""
    from biomarkers.dicom.dims import complex_part, diffusion

    hdr = {"Manufacturer": maker, "GE_SlopInt_6_9": ["1000", "8", "0", "0"], "GE_UserData20": "0.6",
           "GE_UserData21": "0.8", "GE_UserData22": "0", "GE_ImageType": 1}
    assert diffusion(hdr.get) == (None, None, None)
    assert complex_part(hdr.get, ("ORIGINAL", "PRIMARY")) == ""
    ge = {**hdr, "Manufacturer": "GE MEDICAL SYSTEMS"}  # positive control: read in a GE file
    assert diffusion(ge.get)[0] == 1000 and complex_part(ge.get, ("ORIGINAL", "PRIMARY")) == "phase"


@pytest.mark.parametrize("maker", ["GE MEDICAL SYSTEMS", "Philips Medical Systems", ""])
def test_siemens_private_diffusion_is_not_read_in_other_vendors_files(maker):
    """(0019,100c) / (0019,100e) are Siemens' B_value / direction only in Siemens files (GE's group 0019
    block holds other values); Philips' (2001,1003) / (2005,10b0..b2) only in Philips files."""
    from biomarkers.dicom.dims import diffusion

    siemens = {"Siemens_B_value": "1000", "Siemens_DiffusionGradientDirection": [0.0, 0.6, 0.8]}
    philips = {"Philips_DiffusionBFactor": 700.0, "Philips_DiffusionDirectionRL": 1.0,
               "Philips_DiffusionDirectionAP": 0.0, "Philips_DiffusionDirectionFH": 0.0}
    hdr = {"Manufacturer": maker, **siemens}
    assert diffusion(hdr.get)[:2] == (None, None)
    assert diffusion({**hdr, "Manufacturer": "SIEMENS"}.get)[:2] == (1000.0, (0.0, 0.6, 0.8))  # control
    if "Philips" not in maker:
        assert diffusion({"Manufacturer": maker, **philips}.get)[:2] == (None, None)
    assert diffusion({"Manufacturer": "Philips Medical Systems", **philips}.get)[:2] == (700.0, (1.0, 0.0, 0.0))


def test_4d_rerun_is_cached_and_a_changed_volume_recomputes(shared_data, tmp_path):
    sl = _slices(shared_data, 3)
    cases = [_copy(d, v * 3 + k + 1, offset=v, TemporalPositionIdentifier=v + 1) for v in range(2) for k, d in enumerate(sl)]
    _write(tmp_path / "src", cases)
    settings = IngestSettings(index_cache="off")
    first = run_ingest(tmp_path / "src", tmp_path / "out", settings, executor="serial")
    assert first.n_computed() == 1
    again = run_ingest(tmp_path / "src", tmp_path / "out", settings, executor="serial")
    assert again.n_computed() == 0
    row = pd.read_parquet(tmp_path / "out" / "manifest.parquet").iloc[0]
    assert row.volumes == 2 and row["shape"] == "174 x 158 x 3 x 2"  # the cached row keeps its volumes
    last = sorted((tmp_path / "src").iterdir())[-1]  # a file of either volume changes (its mtime)
    os.utime(last, ns=(last.stat().st_atime_ns, last.stat().st_mtime_ns + 10**9))
    assert run_ingest(tmp_path / "src", tmp_path / "out", settings, executor="serial").n_computed() == 1


def test_no_stale_bvec_when_directions_disappear(shared_data, tmp_path):
    sl = _slices(shared_data, 2)
    cases = [_copy(d, v * 2 + k + 1, DiffusionBValue=b, DiffusionGradientOrientation=g)
             for v, (b, g) in enumerate([(0.0, [0.0, 0.0, 0.0]), (1000.0, [1.0, 0.0, 0.0]), (1000.0, [0.0, 1.0, 0.0])])
             for k, d in enumerate(sl)]
    _write(tmp_path / "src", cases)
    rows = _ingest(tmp_path / "src", tmp_path / "out")
    stem = tmp_path / "out" / rows.path[0][: -len(".nii.gz")]
    assert Path(f"{stem}.bvec").is_file()
    for c in cases:
        del c.DiffusionGradientOrientation
    for p in (tmp_path / "src").iterdir():
        p.unlink()
    _write(tmp_path / "src", cases)  # same instances, no directions now
    _ingest(tmp_path / "src", tmp_path / "out")
    assert not Path(f"{stem}.bvec").exists() and not Path(f"{stem}.bval").exists()
