"""The voxel content hash (``io.sha256_array``) equals SHA-256 of numpy's own C-order copy, for
the NIfTI layout (an ``[i, j, k]`` transpose of a C-contiguous slice stack) and any other."""

import hashlib

import numpy as np
import pytest

from biomarkers.io import sha256_array


def reference(a: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (17, 130, 200), (40, 33, 129), (1, 64, 64), (64, 1, 65)])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32])
def test_transposed_volume_hash_is_c_order_hash(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    stack = (rng.normal(size=shape) * 1000).astype(dtype)  # [slice, row, column]
    vol = stack.transpose(2, 1, 0)  # [i, j, k], as convert writes it
    assert vol.T.flags.c_contiguous and (not vol.flags.c_contiguous or sum(n > 1 for n in shape) < 2)
    assert sha256_array(vol) == reference(vol)
    assert sha256_array(np.asfortranarray(vol)) == reference(vol)  # nibabel's dataobj layout
    assert sha256_array(vol) != sha256_array(stack) or shape == (1, 1, 1)  # order matters


@pytest.mark.parametrize("a", [np.arange(24, dtype=np.int16).reshape(2, 3, 4),  # C order
                               np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5).transpose(3, 2, 1, 0),  # 4-D
                               np.arange(60, dtype=np.int16).reshape(3, 4, 5)[:, ::2, :],  # strided view
                               np.arange(7, dtype=np.uint8), np.float64(3.5)])
def test_other_layouts_hash_is_c_order_hash(a):
    assert sha256_array(a) == reference(np.asarray(a).reshape(-1) if np.ndim(a) == 0 else a)


def test_metadata_of_the_subset_equals_the_whole_header(shared_data):
    """The sidecar metadata read from ``convert.metadata_elements`` equals the whitelist applied to the
    whole header, for one file of every shared series (STS, IBSI, dcm_qa: Siemens, GE, Philips-free)."""
    import pydicom

    from biomarkers.deid.whitelist import whitelisted_metadata
    from biomarkers.dicom.convert import metadata_elements

    folders = {}
    for p in sorted(shared_data.rglob("*")):
        if p.is_file() and p.parent not in folders and "Ref" not in p.parts and p.suffix not in (".json", ".md", ".txt"):
            folders[p.parent] = p
    n = 0
    for p in folders.values():
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM
            continue
        if "SOPClassUID" not in ds:
            continue
        assert whitelisted_metadata(metadata_elements(ds)) == whitelisted_metadata(ds), p
        n += 1
    assert n >= 20


def test_metadata_subset_keeps_every_person_name():
    """A person name in an attribute the dictionary does not type PN (explicit VR PN in the file) still
    removes a whitelisted code that contains it, as on the whole header."""
    from pydicom import Dataset

    from biomarkers.deid.whitelist import whitelisted_metadata
    from biomarkers.dicom.convert import metadata_elements

    ds = Dataset()
    ds.Modality = "CT"
    ds.ConvolutionKernel = "MULLER_B30"
    ds.add_new(0x00081030, "PN", "Muller^Anna")  # StudyDescription (LO, not an identifying attribute) as PN
    ds.add_new(0x00321032, "PN", "Doe^John")  # RequestingPhysician
    ds.BodyPartExamined = "CHEST"
    whole = whitelisted_metadata(ds)
    assert "convolution_kernel" not in whole and whole["body_part"] == "CHEST"
    assert whitelisted_metadata(metadata_elements(ds)) == whole


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (30, 12, 64, 70), (1, 5, 9, 65), (7, 1, 1, 1)])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_transposed_4d_volume_hash_is_c_order_hash(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    stack = (rng.normal(size=shape) * 1000).astype(dtype)  # [volume, slice, row, column]
    vol = stack.transpose(3, 2, 1, 0)  # [i, j, k, t], as convert writes a 4-D series
    assert sha256_array(vol) == reference(vol)
