"""Burned-in text (issue 15): refused by deid-export with the reason, or blanked by a configured layout rule."""

from __future__ import annotations

import re

import numpy as np
import pydicom

from biomarkers.deid import DeidSettings, Deidentifier
from biomarkers.deid.export import BlankRule, ExportSettings
from biomarkers.dicom.export import export_dicom
from biomarkers.deid.keys import Pseudonymizer
from biomarkers.dicom.refusals import screen_capture_reason

SECRET = b"burned-in-test-secret-0123456789"


def _capture(shared_data, folder):
    f = sorted((shared_data / "sts" / "dicom" / "STS_001" / "CT" / "image").iterdir())[0]
    ds = pydicom.dcmread(f)
    ds.BurnedInAnnotation = "YES"
    arr = ds.pixel_array.copy()
    arr[10:30, 20:120] = arr.max()  # the "text"
    ds.PixelData = arr.tobytes()
    folder.mkdir()
    ds.save_as(folder / "shot.dcm")
    us = pydicom.dcmread(f)
    us.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image Storage
    us.SOPInstanceUID = us.SOPInstanceUID + ".1"
    us.Manufacturer = "OtherVendor"  # no rule for its layout
    us.save_as(folder / "us.dcm")
    return ds, arr, us


def test_burned_in_skipped_or_blanked(shared_data, tmp_path):
    ds, arr, us = _capture(shared_data, tmp_path / "src")
    deid = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET))
    r = export_dicom(tmp_path / "src", tmp_path / "a", deid)
    assert r.counts() == {"done": 0, "skipped": 2, "failed": 0}
    assert set(r.reasons()) == {screen_capture_reason(ds.get), screen_capture_reason(us.get)}
    assert "Ultrasound" in screen_capture_reason(us.get)
    rule = BlankRule(manufacturer=str(ds.Manufacturer), model=".*", rows=ds.Rows, columns=ds.Columns,
                     rectangles=[[0, 0, ds.Columns, 40]])
    r = export_dicom(tmp_path / "src", tmp_path / "b", deid, ExportSettings(blank=[rule]))
    assert r.counts() == {"done": 1, "skipped": 1, "failed": 0}
    done = [c for c in r.cases if c.status == "done"][0]
    assert done.details.get("blanked") is True
    out = pydicom.dcmread(next((tmp_path / "b").rglob("*.dcm")))
    px = out.pixel_array
    assert (px[:40] == arr.min()).all() and np.array_equal(px[40:], arr[40:])
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [it.CodeValue for it in out.DeidentificationMethodCodeSequence]


def _rgb_capture(folder, planar: int, name: str):
    """A burned-in RGB secondary capture (orange image, white text band on the top two rows)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.PatientID, ds.Modality, ds.Manufacturer, ds.BurnedInAnnotation = "CAPTURE01", "OT", "ShotVendor", "YES"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 10, 3, 8, 8, 7
    ds.PixelRepresentation, ds.PhotometricInterpretation, ds.PlanarConfiguration = 0, "RGB", planar
    arr = np.zeros((8, 10, 3), np.uint8)
    arr[...] = (200, 100, 50)
    arr[:2] = 255
    ds.PixelData = (arr.transpose(2, 0, 1) if planar else arr).tobytes()
    ds.save_as(folder / name, enforce_file_format=True)
    return arr


def test_blanked_colour_capture_keeps_its_colours(tmp_path):
    """Blanking decodes and re-encodes through the Image Pixel attributes: a colour-by-plane capture
    (PlanarConfiguration 1) and an RLE-compressed one come out with the same colours, text band blanked."""
    from pydicom.uid import RLELossless

    src = tmp_path / "src"
    src.mkdir()
    arr = _rgb_capture(src, 1, "planar.dcm")
    _rgb_capture(src, 0, "rle.dcm")
    rle = pydicom.dcmread(src / "rle.dcm")
    rle.compress(RLELossless, generate_instance_uid=False)
    rle.save_as(src / "rle.dcm", enforce_file_format=True)
    rule = BlankRule(manufacturer="shotvendor", rows=8, columns=10, rectangles=[[0, 0, 10, 2]])
    deid = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET))
    r = export_dicom(src, tmp_path / "out", deid, ExportSettings(blank=[rule]))
    assert r.counts() == {"done": 2, "skipped": 0, "failed": 0}
    for f in (tmp_path / "out").rglob("*.dcm"):
        px = pydicom.dcmread(f).pixel_array
        assert np.array_equal(px[2:], arr[2:]), f"{f.name}: colours changed outside the blanked band"
        assert (px[:2] == 50).all()  # the image minimum


def test_blank_rule_that_would_not_blank_is_refused():
    """A rule blanking nothing, outside the image or with a bad pattern is a configuration error
    naming the key: its copies would be declared clean with the text still there."""
    import pytest

    from biomarkers.config import validate
    from biomarkers.errors import ConfigError

    base = {"manufacturer": "ShotVendor", "rows": 8, "columns": 10}
    for bad, key in (({"rectangles": []}, "rectangles"), ({"rectangles": [[0, 0, 10]]}, "rectangles[0]"),
                     ({"rectangles": [[-2, 0, 4, 2]]}, "rectangles[0]"), ({"rectangles": [[8, 0, 4, 2]]}, "rectangles[0]"),
                     ({"rectangles": [[0, 0, 0, 2]]}, "rectangles[0]"),
                     ({"rectangles": [[0, 0, 4, 2]], "model": "Scan(ner"}, "model")):
        with pytest.raises(ConfigError, match=r"site\.yaml: blank\.0: " + re.escape(key)):
            validate(ExportSettings, {"blank": [dict(base, **bad)]}, source="site.yaml")
    assert validate(ExportSettings, {"blank": [dict(base, rectangles=[[0, 0, 10, 8]])]}).blank[0].rows == 8
