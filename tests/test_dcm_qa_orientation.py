"""``dcm_qa`` (Siemens orientations and slice orders, In/Orientation) against dcm2niix's ``Ref/``.

Collection: neurolabusc/dcm_qa (BSD-2-Clause, Chris Rorden et al.; ``LICENSE`` and
``README.md`` in ``../shared/data/dcm_qa/dcm_qa``). Each series folder holds two Siemens
MOSAIC files (two volumes of an EPI run: axial, coronal, sagittal; ascending, descending,
interleaved; 35 and 36 slices; two multiband runs stored as lossless JPEG and JPEG 2000).
dcm2niix names each output ``<protocol>_<SeriesNumber>``: the reference of a folder is
the ``Ref/*_<SeriesNumber>.nii``. Every one of the 21 series has a reference NIfTI (none
missing); the input also holds a stray NIfTI (``ax/axasc35/6_ax_asc_35sl.nii``), which
must be reported as not used.
"""

from __future__ import annotations

import json

import nibabel as nib
import pydicom
import pytest

from dcm_qa import assert_reproduces, ingest_each


def _series_folders(root):
    return sorted(p.parent for p in root.rglob("*") if p.is_file() and p.suffix not in (".nii", ".pdf", ".txt")
                  and p.parent.name != "Orientation")


@pytest.fixture(scope="module")
def qa(shared_data):
    return shared_data / "dcm_qa" / "dcm_qa"


@pytest.fixture(scope="module")
def pairs(qa):
    """series folder (relative to In/Orientation) -> its reference NIfTI."""
    out = {}
    for folder in dict.fromkeys(_series_folders(qa / "In" / "Orientation")):
        sn = int(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesNumber)
        refs = list((qa / "Ref").glob(f"*_{sn}.nii"))
        assert len(refs) == 1, (folder, refs)
        out[str(folder.relative_to(qa / "In" / "Orientation"))] = refs[0]
    return out


def test_every_reference_volume_has_its_series(qa, pairs):
    assert sorted(pairs.values()) == sorted((qa / "Ref").glob("*.nii")) and len(pairs) == 21


@pytest.fixture(scope="module")
def converted(qa, pairs, tmp_path_factory):
    return ingest_each(qa / "In" / "Orientation", pairs, tmp_path_factory, "orientation")


@pytest.mark.parametrize("rel", [
    "ax/axasc35", "ax/axasc36", "ax/axasc36b", "ax/axdesc35", "ax/axdesc36", "ax/axint35", "ax/axint36",
    "axmb/AxAsc36mb2a", "axmb/AxInt36mb",
    "cor/corasc35", "cor/corasc36", "cor/cordesc35", "cor/cordesc36", "cor/corint35", "cor/corint36",
    "sag/sagasc35", "sag/sagasc36", "sag/sagdesc35", "sag/sagdesc36", "sag/sagint35", "sag/sagint36",
])
def test_reproduces_reference_volume(converted, pairs, rel):
    dest, row = converted[rel]
    assert row.status == "converted", row.reason
    assert_reproduces(dest / row.path, pairs[rel])
    t = nib.load(str(pairs[rel])).shape[3]
    assert row.volumes == t and row["shape"].endswith(f" x {t}")
    vols = json.loads((dest / row.path.replace(".nii.gz", ".json")).read_text())["volumes"]
    assert vols["count"] == t and vols["dimension"] == "time"


def test_stray_nifti_in_input_is_not_used(converted):
    dest, _ = converted["ax/axasc35"]
    report = json.loads((dest / "report.json").read_text())
    assert [u["reason"] for u in report["unused_files"]] == ["not a DICOM file"]
