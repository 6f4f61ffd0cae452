"""Foundation: geometry conversions, config validation, atomic writes, executors."""

from __future__ import annotations

import numpy as np
import pytest

from biomarkers.config import Settings, validate
from biomarkers.errors import ConfigError
from biomarkers.executors import SerialExecutor, get_executor
from biomarkers.geometry import Grid, nifti_image


def test_grid_affine_roundtrip_oblique():
    # an oblique, non-square grid: i along a rotated axis
    c, s = np.cos(0.3), np.sin(0.3)
    iop = [c, s, 0.0, -s, c, 0.0]
    pos = [[10.0, -20.0, z] for z in (5.0, 7.5, 10.0)]
    g = Grid.from_dicom(rows=4, columns=3, pixel_spacing=[0.5, 0.7], image_orientation=iop, positions=pos)
    assert g.shape == (3, 4, 3)
    assert g.spacing == pytest.approx((0.7, 0.5, 2.5))
    g2 = Grid.from_affine_ras(g.affine_ras(), g.shape)
    assert g2.almost_equal(g, atol_mm=1e-9, atol_dir=1e-12)
    # RAS = LPS with x and y negated: voxel (1,0,0) lies 0.7 mm along the row direction
    p_lps = g.index_to_lps([1, 0, 0])
    p_ras = g.affine_ras() @ [1, 0, 0, 1]
    assert p_ras[:3] == pytest.approx([-p_lps[0], -p_lps[1], p_lps[2]])
    assert np.allclose(p_lps - pos[0], 0.7 * np.array(iop[:3]))
    assert g.lps_to_index(p_lps) == pytest.approx([1, 0, 0])
    assert g.is_oblique()


def test_mask_inherits_image_header_exactly():
    g = Grid((3, 4, 5), (0.9765625, 0.9765625, 3.27), (1.1, 2.2, 3.3), ((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    img = nifti_image(np.zeros(g.shape, np.int16), g)
    mask = nifti_image(np.zeros(g.shape, np.uint8), g, like=img)
    assert np.array_equal(mask.affine, img.affine)
    assert np.array_equal(mask.header.get_qform(), img.header.get_qform())
    assert mask.header["descrip"].tobytes().strip(b"\x00") == b""


def test_config_errors_name_key_and_file():
    class S(Settings):
        workers: int = 1

    with pytest.raises(ConfigError, match=r"my.yaml: workrs: unknown key"):
        validate(S, {"workrs": 2}, source="my.yaml")
    with pytest.raises(ConfigError, match=r"my.yaml: workers: .*'two'"):
        validate(S, {"workers": "two"}, source="my.yaml")


def _square(x):
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x * x


def test_executors_isolate_failures():
    items = [(str(i), i) for i in (-1, 2, 3)]
    for ex in (SerialExecutor(), get_executor("local:2")):
        with ex:
            out = {o.key: o for o in ex.map_unordered(_square, items)}
        assert out["2"].value == 4 and out["3"].value == 9
        assert not out["-1"].ok and "negative input -1" in out["-1"].error
    with pytest.raises(ConfigError, match="unknown executor"):
        get_executor("spark://x")


def test_manifest_rows_round_trip_and_legacy_source_stack(tmp_path):
    """Rows written and read back are equal; a manifest without ``source_stack`` gets it from ``image_path``."""
    import pandas as pd

    from biomarkers.manifest import COLUMNS, ImageRef, Manifest, ManifestRow

    ref2 = ImageRef("BM-A", "2.25.1", "2.25.2", "#2", "CT", "images/BM-A/CT_2_s2.nii.gz", "CT_2_s2")
    rows = [ManifestRow.image(ImageRef("BM-A", "2.25.1", "2.25.2", "", "CT", "images/BM-A/CT_2.nii.gz", "CT_2"),
                              "converted", n_files=3, content_hash="c1"),
            ManifestRow.image(ref2, "converted", n_files=2),
            ManifestRow.mask("BM-A", "2.25.1", "2.25.9", ref2, "GTV", "converted", n_files=1)]
    Manifest(rows).write(tmp_path)
    back = Manifest.read(tmp_path).rows
    assert sorted(back, key=lambda r: r.path) == sorted(rows, key=lambda r: r.path)
    assert pd.read_csv(tmp_path / "manifest.csv").columns.tolist() == COLUMNS and COLUMNS[-2:] == ["source_stack", "volumes"]
    mask = [r for r in back if r.kind == "mask"][0]
    assert Manifest(back).image_of(mask).path == "images/BM-A/CT_2_s2.nii.gz"
    legacy = [{k: v for k, v in r.to_dict().items() if k != "source_stack"} for r in rows]
    old = Manifest.from_records(legacy)
    assert Manifest(old.rows).image_of(old.rows[2]).stack == "#2"
