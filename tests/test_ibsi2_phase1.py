"""IBSI 2 phase 1: all 33 reference response maps pass (every voxel within 1% of the map's range).

Each map goes through the public API (:func:`biomarkers.features.filters.response_map`) with the
settings of the IBSI 2 manual (:data:`biomarkers.features.filters.check.PHASE1`); the reference
maps are the published ``*-ValidCRM.nii`` files (theibsi/ibsi_2_reference_data).
"""

from __future__ import annotations

import numpy as np
import pytest

from biomarkers.features.filters.check import PHASE1, compare_map, phantom, reference_map, run_phase1


def test_every_test_of_the_reference_data_is_covered(shared_data):
    files = sorted((shared_data / "ibsi2" / "reference_response_maps").glob("*-ValidCRM.nii"))
    ids = {f.name.split("-")[0].replace("_", ".") for f in files}
    assert len(files) == 33
    assert ids == set(PHASE1)


@pytest.mark.parametrize("test", list(PHASE1))
def test_reference_response_map_passes(shared_data, test):
    (r,) = run_phase1([test], shared_data)
    assert r.passed, f"{test}: max |diff| {r.max_abs_diff:.4g} = {r.error_pct:.3f}% of the range {r.ref_range:.4g}"


def test_the_check_fails_a_wrong_map(shared_data):
    """A neighbouring setting (mirror instead of nearest boundary for 1.a.2) does not pass."""
    from biomarkers.features.filters import filter_spec, response_map

    img, sp = phantom("checkerboard", shared_data)
    wrong = response_map(img, sp, filter_spec("mean", {"support": 15, "boundary": "constant"}))
    assert not compare_map("1.a.2", wrong, reference_map("1.a.2", shared_data)).passed
    shifted = np.roll(reference_map("2.a", shared_data), 1, axis=2)
    assert not compare_map("2.a", shifted, reference_map("2.a", shared_data)).passed
