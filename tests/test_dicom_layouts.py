"""Pixel layouts and refusals, cases built with pydicom from shared series.

* Refused with a specific reason (never written as a plausible volume): screen captures
  (Secondary Capture SOP class, ConversionType, BurnedInAnnotation YES, DERIVED\\SECONDARY
  SCREEN SAVE), colour images (RGB, PALETTE COLOR), Siemens mosaics without their CSA count
  or with a count that does not fit the image.
* The CSA parser against headers written by this test's own CSA2 encoder.
* Philips scaling: display vs precise values computed by hand from planted private tags.

Expected values come from how each case is built, never from the converter.
"""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import generate_uid

from biomarkers.config import ConfigError
from biomarkers.dicom.ingest import IngestSettings, run_ingest
from biomarkers.dicom.mosaic import read_csa
from biomarkers.dicom.refusals import screen_capture_reason

from dcm_qa import assert_reproduces

CT = "STS_002/CT"


def _series(shared_data, rel: str, n: int = 4) -> list[pydicom.Dataset]:
    """``n`` slices (by position) from the middle of a shared STS series."""
    ds = [pydicom.dcmread(p) for p in sorted((shared_data / "sts" / "dicom" / rel / "image").iterdir())]
    ds.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    mid = len(ds) // 2 - n // 2
    return ds[mid : mid + n]


def _save(folder: Path, datasets, edit=None) -> Path:
    """Copies under a new series UID (new SOP instance UIDs), ``edit(ds)`` applied to each."""
    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    for n, d in enumerate(datasets):
        c = copy.deepcopy(d)
        c.SeriesInstanceUID = series
        c.SOPInstanceUID = c.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if edit is not None:
            edit(c)
        c.save_as(folder / f"s{n:03d}.dcm", enforce_file_format=True)
    return folder


def _rows(src: Path, out: Path, **settings) -> pd.DataFrame:
    run_ingest(src, out, IngestSettings(index_cache="off", **settings), executor="serial")
    df = pd.read_parquet(out / "manifest.parquet")
    return df[df.kind == "image"].reset_index(drop=True)


def _only_row(src: Path, out: Path, **settings):
    df = _rows(src, out, **settings)
    assert len(df) == 1, df.to_string()
    return df.iloc[0]


# ----------------------------------------------------------------------------- refusals
def _set_image_type(*values):
    def edit(ds):
        ds.ImageType = list(values)
    return edit


def _screen_save(ds):
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]


def _conversion(ds):
    ds.ConversionType = "WSD"


def _burned_in(ds):
    ds.BurnedInAnnotation = "YES"


def _secondary_capture(ds):
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    for kw in ("ImagePositionPatient", "ImageOrientationPatient"):
        delattr(ds, kw)


def _derived_without_geometry(ds):
    ds.ImageType = ["DERIVED", "SECONDARY"]
    for kw in ("ImagePositionPatient", "ImageOrientationPatient"):
        delattr(ds, kw)


@pytest.mark.parametrize("edit, words", [
    (_screen_save, "SCREEN SAVE"),
    (_conversion, "ConversionType WSD"),
    (_burned_in, "BurnedInAnnotation YES"),
    (_secondary_capture, "Secondary Capture Image (SOP class)"),
    (_derived_without_geometry, "without patient geometry"),
])
def test_screen_captures_are_skipped_with_their_reason(edit, words, shared_data, tmp_path):
    """A derived screen capture of a real CT series: the series is one skipped row saying why."""
    src = _save(tmp_path / "src", _series(shared_data, CT), edit)
    row = _only_row(src, tmp_path / "out")
    assert row.status == "skipped" and not row.path
    assert "screen capture" in row.reason or "burned-in" in row.reason
    assert words in row.reason, row.reason
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


def test_derived_secondary_with_geometry_is_not_a_screen_capture():
    """DERIVED\\SECONDARY alone (GE PET reconstructions, reformats) is converted: one definition."""
    values = {"ImageType": ["DERIVED", "SECONDARY"], "ImagePositionPatient": [0, 0, 0],
              "ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "SOPClassUID": "1.2.840.10008.5.1.4.1.1.128"}
    assert screen_capture_reason(values.get) == ""
    values["ImageType"] = ["DERIVED", "SECONDARY", "CSA REPORT"]
    assert "CSA REPORT" in screen_capture_reason(values.get)


def _rgb(ds):
    """The CT slice as an 8-bit RGB image (same rows x columns, grey in all three channels)."""
    grey = np.clip((ds.pixel_array.astype(np.int32) + 1024) // 16, 0, 255).astype(np.uint8)
    ds.PixelData = np.repeat(grey[..., None], 3, axis=2).tobytes()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0


def _palette(ds):
    """One sample per pixel, but its values index a colour palette (PALETTE COLOR)."""
    ds.PhotometricInterpretation = "PALETTE COLOR"


@pytest.mark.parametrize("edit, words", [(_rgb, "PhotometricInterpretation RGB, SamplesPerPixel 3"),
                                         (_palette, "PhotometricInterpretation PALETTE COLOR")])
def test_colour_images_are_skipped(edit, words, shared_data, tmp_path):
    src = _save(tmp_path / "src", _series(shared_data, CT), edit)
    row = _only_row(src, tmp_path / "out")
    assert row.status == "skipped" and row.reason.startswith("colour image") and words in row.reason, row.reason


# ----------------------------------------------------------------------------- mosaic CSA
MOSAIC = "ep2d_Asc_2"


def csa2(elements: dict[str, list[str]]) -> bytes:
    """A Siemens CSA2 header (``SV10``) holding ``elements`` (name -> item strings), written
    from the format's description (independent of the reader under test)."""
    out = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<II", len(elements), 77)]
    for name, items in elements.items():
        out.append(struct.pack("<64si4s3i", name.encode(), len(items), b"FD\x00\x00", 4, len(items), 77))
        for item in items:
            raw = item.encode() + b"\x00"
            out.append(struct.pack("<4i", len(raw), len(raw), 77, len(raw)))
            out.append(raw + b"\x00" * (-len(raw) % 4))
    return b"".join(out)


def _mosaic_copy(shared_data, dest: Path, elements: dict[str, list[str]] | None) -> Path:
    """The dcm_qa_mosaic series with its CSA image header replaced by ``elements`` (None: removed)."""
    src = shared_data / "dcm_qa" / "dcm_qa_mosaic" / "In" / MOSAIC
    dest.mkdir(parents=True)
    for p in sorted(src.iterdir()):
        ds = pydicom.dcmread(p)
        if elements is None:
            del ds[0x00291010]
        else:
            ds[0x00291010].value = csa2(elements)
        ds.save_as(dest / p.name)
    return dest


def test_csa_reader_reads_an_independently_encoded_header():
    got = read_csa(csa2({"NumberOfImagesInMosaic": ["36"], "SliceNormalVector": ["0.0", "0.5", "-1.25"]}))
    assert got == {"NumberOfImagesInMosaic": ["36"], "SliceNormalVector": ["0.0", "0.5", "-1.25"]}


def _normal(shared_data) -> list[str]:
    ds = pydicom.dcmread(next((shared_data / "dcm_qa" / "dcm_qa_mosaic" / "In" / MOSAIC).iterdir()))
    return read_csa(ds[0x00291010].value)["SliceNormalVector"]


def test_mosaic_with_a_rewritten_csa_header_still_reproduces_dcm2niix(shared_data, tmp_path):
    """Positive control for the refusals below: only count and normal, in our own encoding."""
    src = _mosaic_copy(shared_data, tmp_path / "src", {"NumberOfImagesInMosaic": ["36"],
                                                         "SliceNormalVector": _normal(shared_data)})
    row = _only_row(src, tmp_path / "out")
    assert row.status == "converted" and row["shape"] == "64 x 64 x 36 x 6", row.reason
    assert_reproduces(tmp_path / "out" / row.path, shared_data / "dcm_qa" / "dcm_qa_mosaic" / "Ref" / "2_ep2d_Asc.nii")


@pytest.mark.parametrize("elements, words", [
    (None, "without its CSA image header"),
    ("no count", "without NumberOfImagesInMosaic"),
    ("37", "NumberOfImagesInMosaic=37 does not fit a 384 x 384 image"),
    ("no normal", "without SliceNormalVector"),
])
def test_mosaic_without_a_usable_count_is_skipped(elements, words, shared_data, tmp_path):
    if elements == "no count":
        elements = {"SliceNormalVector": _normal(shared_data)}
    elif elements == "no normal":
        elements = {"NumberOfImagesInMosaic": ["36"]}
    elif elements == "37":
        elements = {"NumberOfImagesInMosaic": ["37"], "SliceNormalVector": _normal(shared_data)}
    src = _mosaic_copy(shared_data, tmp_path / "src", elements)
    row = _only_row(src, tmp_path / "out")
    assert row.status == "skipped" and words in row.reason and "Siemens mosaic" in row.reason, row.reason
    assert not list((tmp_path / "out").rglob("*.nii.gz")), "a mosaic must never be written as a 2-D image"


# ----------------------------------------------------------------------------- Philips scaling
MR = "STS_001/MR_T1"
RS, RI = 2.5, -10.0  # RescaleSlope / RescaleIntercept planted
SS = (0.37, 0.37, 0.41, 0.41)  # MRScaleSlope (2005,100E) planted per slice


def _philips(shared_data, dest: Path, private: bool = True) -> tuple[Path, np.ndarray]:
    """Four MR slices as a Philips series with rescale and (``private``) MRScaleSlope per slice;
    returns the folder and the stored values [slice, row, col]."""
    sl = _series(shared_data, MR)
    k = iter(range(len(sl)))

    def edit(ds):
        i = next(k)
        ds.Manufacturer = "Philips Medical Systems"
        ds.RescaleSlope, ds.RescaleIntercept = RS, RI
        if private:
            ds.add_new(0x20050010, "LO", "Philips MR Imaging DD 001")
            ds.add_new(0x2005100E, "FL", SS[i])

    return _save(dest, sl, edit), np.stack([d.pixel_array for d in sl]).astype(np.float64)


@pytest.mark.parametrize("mode", ["display", "precise"])
def test_philips_scaling_display_and_precise(mode, shared_data, tmp_path):
    src, stored = _philips(shared_data, tmp_path / "src")
    row = _only_row(src, tmp_path / "out", philips_scaling=mode)
    assert row.status == "converted", row.reason
    img = nib.load(tmp_path / "out" / row.path)
    got = np.asanyarray(img.dataobj).astype(np.float64).transpose(2, 1, 0)  # -> [slice, row, col]
    display = stored * RS + RI  # by hand
    want = display if mode == "display" else display / (RS * np.asarray(SS)[:, None, None])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
    side = json.loads((tmp_path / "out" / row.path.replace(".nii.gz", ".json")).read_text())
    assert side["philips_scaling"] == mode


def test_philips_scaling_not_recorded_without_the_private_slope(shared_data, tmp_path):
    src, stored = _philips(shared_data, tmp_path / "src", private=False)
    row = _only_row(src, tmp_path / "out", philips_scaling="precise")
    side = json.loads((tmp_path / "out" / row.path.replace(".nii.gz", ".json")).read_text())
    assert side["philips_scaling"] is None
    got = np.asanyarray(nib.load(tmp_path / "out" / row.path).dataobj).transpose(2, 1, 0)
    np.testing.assert_allclose(got, stored * RS + RI, atol=1e-4)


def test_philips_scaling_is_validated_at_the_edge(tmp_path):
    from biomarkers.config import load_yaml

    cfg = tmp_path / "ingest.yaml"
    cfg.write_text("philips_scaling: exact\n")
    with pytest.raises(ConfigError, match="philips_scaling"):
        load_yaml(cfg, IngestSettings)
    assert IngestSettings().philips_scaling == "display"


# ----------------------------------------------------------------------------- enhanced multi-frame
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
TEMPORAL_INDEX, IN_STACK = 0x00209128, 0x00209057


def _item(**kw) -> pydicom.Dataset:
    d = pydicom.Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def _enhanced(slices, frames: list[dict], dest: Path) -> Path:
    """One Enhanced MR file from classic ``slices``: ``frames`` (in file order) give each frame's
    ``slice`` (index into ``slices``), ``offset`` (added to the stored values), rescale ``slope``
    / ``intercept`` and, optionally, ``t`` (TemporalPositionIndex), ``te`` (EffectiveEchoTime),
    ``index`` (DimensionIndexValues, default ``[t, slice + 1]``)."""
    t0 = slices[0]
    ds = copy.deepcopy(t0)
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
               "RescaleSlope", "RescaleIntercept", "InstanceNumber", "SliceLocation", "EchoTime"):
        if kw in ds:
            delattr(ds, kw)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.NumberOfFrames = len(frames)
    ds.DimensionIndexSequence = [_item(DimensionIndexPointer=TEMPORAL_INDEX, FunctionalGroupPointer=0x00209111),
                                 _item(DimensionIndexPointer=IN_STACK, FunctionalGroupPointer=0x00209111)]
    ds.SharedFunctionalGroupsSequence = [_item(
        PlaneOrientationSequence=[_item(ImageOrientationPatient=list(t0.ImageOrientationPatient))],
        PixelMeasuresSequence=[_item(PixelSpacing=list(t0.PixelSpacing), SliceThickness=t0.SliceThickness)])]
    per, pixels = [], []
    for f in frames:
        s = slices[f["slice"]]
        content = _item(InStackPositionNumber=f["slice"] + 1,
                        DimensionIndexValues=f.get("index", [f.get("t", 1), f["slice"] + 1]))
        if "t" in f:
            content.TemporalPositionIndex = f["t"]
        item = _item(FrameContentSequence=[content],
                     PlanePositionSequence=[_item(ImagePositionPatient=list(s.ImagePositionPatient))],
                     PixelValueTransformationSequence=[_item(RescaleSlope=f["slope"], RescaleIntercept=f["intercept"],
                                                             RescaleType="US")])
        if "te" in f:
            item.MREchoSequence = [_item(EffectiveEchoTime=f["te"])]
        if "b" in f:
            diff = _item(DiffusionBValue=f["b"], DiffusionDirectionality="DIRECTIONAL" if f["b"] else "NONE")
            if f["b"]:
                diff.DiffusionGradientDirectionSequence = [_item(DiffusionGradientOrientation=list(f["g"]))]
            item.MRDiffusionSequence = [diff]
        per.append(item)
        pixels.append((s.pixel_array.astype(np.int32) + f["offset"]).astype(s.pixel_array.dtype))
    ds.PerFrameFunctionalGroupsSequence = per
    ds.PixelData = np.stack(pixels).tobytes()
    dest.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest / "enhanced.dcm", enforce_file_format=True)
    return dest


def _stored(slices) -> np.ndarray:
    return np.stack([d.pixel_array for d in slices]).astype(np.float64)  # [slice, row, col]


def test_enhanced_frames_ordered_by_temporal_index_with_per_frame_rescale(shared_data, tmp_path):
    """Three temporal positions x four slices, frames shuffled in the file, each volume with its own
    offset and rescale: the 4th axis follows TemporalPositionIndex, values are SV * RS + RI per frame."""
    sl = _series(shared_data, MR)
    vols = {1: (0, 1.0, 0.0), 2: (100, 2.0, -5.0), 3: (200, 0.5, 3.0)}  # t -> (offset, slope, intercept)
    frames = [dict(slice=k, t=t, offset=o, slope=m, intercept=b) for t, (o, m, b) in vols.items() for k in range(4)]
    order = [5, 0, 11, 2, 8, 1, 7, 10, 3, 6, 9, 4]
    row = _only_row(_enhanced(sl, [frames[i] for i in order], tmp_path / "src"), tmp_path / "out")
    assert row.status == "converted" and row["shape"].endswith(" x 4 x 3"), (row.reason, row["shape"])
    got = np.asanyarray(nib.load(tmp_path / "out" / row.path).dataobj).astype(np.float64)
    stored = _stored(sl)
    for t, (o, m, b) in vols.items():
        np.testing.assert_allclose(got[..., t - 1].transpose(2, 1, 0), (stored + o) * m + b, atol=1e-3)


def test_enhanced_echoes_become_separate_outputs(shared_data, tmp_path):
    sl = _series(shared_data, MR)
    frames = [dict(slice=k, te=te, offset=o, slope=1.0, intercept=0.0, index=[e, k + 1])
              for e, (te, o) in enumerate(((12.0, 0), (24.0, 50)), start=1) for k in range(4)]
    df = _rows(_enhanced(sl, frames[::-1], tmp_path / "src"), tmp_path / "out").sort_values("stack")
    assert list(df["stack"]) == ["", "#e2"] and set(df.status) == {"converted"}, df.to_string()
    stored = _stored(sl)
    for (_, r), o in zip(df.iterrows(), (0, 50)):
        got = np.asanyarray(nib.load(tmp_path / "out" / r.path).dataobj).astype(np.float64)
        np.testing.assert_allclose(got.transpose(2, 1, 0), stored + o)


def test_enhanced_layout_that_cannot_be_ordered_is_skipped(shared_data, tmp_path):
    """Two frames of one position with the same DimensionIndexValues: which is which is unknowable."""
    sl = _series(shared_data, MR)
    frames = [dict(slice=k, offset=0, slope=1.0, intercept=0.0, index=[1, k + 1]) for k in range(4)]
    frames.append(dict(slice=0, offset=7, slope=1.0, intercept=0.0, index=[1, 1]))
    row = _only_row(_enhanced(sl, frames, tmp_path / "src"), tmp_path / "out")
    assert row.status == "skipped" and "cannot be ordered" in row.reason and "DimensionIndexValues" in row.reason
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


def test_enhanced_diffusion_from_the_mr_diffusion_sequence(shared_data, tmp_path):
    """b = 0, 1000, 1000 with two directions, only in each frame's MRDiffusionSequence, frames ranked
    by DimensionIndexValues (volume index first): a diffusion series with those b-values and
    directions (LPS, sidecar) in that order."""
    sl = _series(shared_data, MR)
    vols = [(0.0, (0.0, 0.0, 0.0)), (1000.0, (1.0, 0.0, 0.0)), (1000.0, (0.0, 0.6, 0.8))]
    frames = [dict(slice=k, b=b, g=g, offset=10 * v, slope=1.0, intercept=0.0, index=[v + 1, k + 1])
              for v, (b, g) in enumerate(vols) for k in range(4)]
    row = _only_row(_enhanced(sl, frames[::-1], tmp_path / "src"), tmp_path / "out")
    assert row.status == "converted" and row["shape"].endswith(" x 4 x 3"), (row.reason, row["shape"])
    side = json.loads((tmp_path / "out" / row.path.replace(".nii.gz", ".json")).read_text())
    assert side["volumes"]["dimension"] == "diffusion"
    assert side["volumes"]["b_value"] == [0.0, 1000.0, 1000.0]
    np.testing.assert_allclose(side["volumes"]["gradient_lps"], [g for _, g in vols], atol=1e-9)
    got = np.asanyarray(nib.load(tmp_path / "out" / row.path).dataobj).astype(np.float64)
    for v in range(3):
        np.testing.assert_allclose(got[..., v].transpose(2, 1, 0), _stored(sl) + 10 * v)
