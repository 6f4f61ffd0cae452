"""``dcm_qa_mosaic`` (Siemens mosaic EPI) against dcm2niix's ``Ref/``.

Collection: neurolabusc/dcm_qa_mosaic (BSD-2-Clause, Chris Rorden et al.; ``LICENSE`` and
``README.md`` in ``../shared/data/dcm_qa/dcm_qa_mosaic``): Siemens Prisma VD13 fMRI, the
product (``ep2d``, 36 slices in 6 x 6 tiles) and CMRR (``cmrr``, 40 slices in 7 x 7 tiles)
sequences, ascending and interleaved slice order, stored F>>H (default) and H>>F (``_HF``).
Each input folder is one series of 6 mosaics (6 volumes); dcm2niix writes 64 x 64 x S x 6.

Compared: shape (4-D), world geometry of the corner voxels in RAS within 0.05 mm, voxels
within 0.5 (the shared helpers of ``tests/dcm_qa.py``), and slice timing (dcm2niix's
``SliceTiming``, seconds, in its slice order) mapped through the same axis correspondence.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dcm_qa import assert_reproduces, ingest_each

#: input folder -> dcm2niix's output stem in Ref/
SERIES = {
    "ep2d_Asc_2": "2_ep2d_Asc",
    "ep2d_Int_4": "4_ep2d_Int",
    "ep2d_Int_HF_5": "5_ep2d_Int_HF",
    "cmrr_Asc_6": "6_cmrr_Asc",
    "cmrr_Asc_HF_7": "7_cmrr_Asc_HF",
    "cmrr_Int_8": "8_cmrr_Int",
    "cmrr_Int_HF_9": "9_cmrr_Int_HF",
    "ep2d_Asc_HF_10": "10_ep2d_Asc_HF",
}


@pytest.fixture(scope="module")
def mosaic(shared_data):
    return shared_data / "dcm_qa" / "dcm_qa_mosaic"


@pytest.fixture(scope="module")
def converted(mosaic, tmp_path_factory):
    """Each series ingested on its own: folder -> (output folder, its one image row)."""
    return ingest_each(mosaic / "In", SERIES, tmp_path_factory, "mosaic")


def test_every_reference_volume_is_listed(mosaic):
    """SERIES covers every reference NIfTI of the collection."""
    assert {p.stem for p in (mosaic / "Ref").glob("*.nii")} == set(SERIES.values())


@pytest.mark.parametrize("folder", list(SERIES))
def test_mosaic_reproduces_dcm2niix(folder, converted, mosaic):
    dest, row = converted[folder]
    assert row.status == "converted", row.reason
    ref = mosaic / "Ref" / f"{SERIES[folder]}.nii"
    n_slices = 36 if folder.startswith("ep2d") else 40
    assert row["shape"] == f"64 x 64 x {n_slices} x 6" and row["volumes"] == 6
    assert "single_slice" not in row.qc_flags
    perm, flip = assert_reproduces(dest / row.path, ref)
    # slice timing: ours along our k axis, dcm2niix's along its slice axis
    side = json.loads((dest / row.path.replace(".nii.gz", ".json")).read_text())
    ours = np.asarray(side["slice_timing_s"])
    theirs = np.asarray(json.loads(ref.with_suffix(".json").read_text())["SliceTiming"])
    assert perm[2] == 2
    np.testing.assert_allclose(ours, theirs[::-1] if flip[2] else theirs, atol=1e-3)

