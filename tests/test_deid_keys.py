"""Keyed pseudonyms, UIDs, date shifting, age caps, settings and the linkage table."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import os
import re
import stat

import pytest

from biomarkers.config import validate
from biomarkers.deid import DeidSettings, Deidentifier, Pseudonymizer, load_secret
from biomarkers.deid.dates import age_years, cap_age, parse_date, shift_dicom_date, year_only_dicom_date
from biomarkers.errors import ConfigError, PrivacyError, SecretError

SECRET = b"unit-test-secret-0123456789"
UID_RX = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


# --------------------------------------------------------------------------- secret


def test_secret_from_env_and_file(monkeypatch, tmp_path):
    monkeypatch.setenv("BIOMARKERS_SECRET", "from-env-0123456789")
    assert load_secret() == b"from-env-0123456789"
    monkeypatch.delenv("BIOMARKERS_SECRET")
    f = tmp_path / "secret.txt"
    f.write_text("from-file-0123456789\n")
    monkeypatch.setenv("BIOMARKERS_SECRET_FILE", str(f))
    assert load_secret() == b"from-file-0123456789"  # trailing newline stripped
    monkeypatch.setenv("BIOMARKERS_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(SecretError, match="BIOMARKERS_SECRET_FILE"):
        load_secret()


def test_missing_secret_is_an_error_except_in_demo(monkeypatch):
    monkeypatch.delenv("BIOMARKERS_SECRET")
    with pytest.raises(SecretError, match="BIOMARKERS_SECRET"):
        load_secret()
    with pytest.raises(SecretError):
        Deidentifier(DeidSettings())
    demo = Deidentifier(DeidSettings(demo=True))
    assert demo.pseudonymizer.demo and demo.run_info()["demo_secret"] is True
    # de-identification off needs no secret
    assert Deidentifier(DeidSettings(enabled=False)).patient_id("X1") == "X1"


def test_short_secret_rejected_and_never_shown(monkeypatch):
    monkeypatch.setenv("BIOMARKERS_SECRET", "short")
    with pytest.raises(SecretError, match="too short"):
        load_secret()
    p = Pseudonymizer(SECRET)
    assert SECRET.decode() not in repr(p) and SECRET.decode() not in str(Deidentifier(pseudonymizer=p).run_info())


# --------------------------------------------------------------------------- pseudonyms


def test_pseudonym_is_hmac_of_normalised_id():
    p = Pseudonymizer(SECRET, prefix="BM")
    # hand computation of the documented construction: HMAC-SHA256(secret, "patient\0" + normalised id)
    d = hmac.new(SECRET, b"patient\x00STS_001", hashlib.sha256).digest()
    expected = "BM-" + base64.b32encode(d).decode()[:12]
    assert p.patient_id("STS_001") == expected
    assert p.patient_id("  sts_001 ") == expected  # trimmed, upper case
    assert p.patient_id(12) == p.patient_id(12.0) == p.patient_id("12")
    assert re.fullmatch(r"BM-[A-Z2-7]{12}", expected)
    assert Pseudonymizer(b"another-secret-0123456789").patient_id("STS_001") != expected
    assert p.patient_id("STS_002") != expected
    with pytest.raises(ValueError):
        p.patient_id("   ")


def test_same_secret_same_values_across_instances():
    a, b = Pseudonymizer(SECRET), Pseudonymizer(bytes(SECRET))
    uid = "1.3.6.1.4.1.14519.5.2.1.5168.1900.449841255123215696894565592289"
    assert a.patient_id("P1") == b.patient_id("P1")
    assert a.uid(uid) == b.uid(uid)
    assert a.date_offset_days("P1") == b.date_offset_days("P1")


# --------------------------------------------------------------------------- UIDs


@pytest.mark.parametrize("root", ["2.25", "1.2.826.0.1.3680043.10.99", "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17"])
def test_uids_are_valid_dicom_uids_under_the_root(root):
    from pydicom.uid import UID

    p = Pseudonymizer(SECRET, uid_root=root)
    seen = set()
    for i in range(300):
        u = p.uid(f"1.2.840.99999.{i}")
        assert len(u) <= 64 and UID_RX.match(u), u
        assert u.startswith(root + ".")
        assert UID(u).is_valid
        seen.add(u)
    assert len(seen) == 300
    assert p.uid(" 1.2.3 ") == p.uid("1.2.3")


def test_bad_uid_root_rejected():
    with pytest.raises(SecretError, match="uid_root"):
        Pseudonymizer(SECRET, uid_root="2.25.abc")
    with pytest.raises(SecretError):
        Pseudonymizer(SECRET, uid_root="1." * 22 + "1")  # 45 characters: too little room for the hash
    with pytest.raises(SecretError):
        Pseudonymizer(SECRET, uid_root="1.02.3")  # leading zero
    with pytest.raises(SecretError):
        Pseudonymizer(SECRET, max_shift_days=0)


# --------------------------------------------------------------------------- dates and ages


def test_date_offset_in_range_and_intervals_preserved():
    p = Pseudonymizer(SECRET, max_shift_days=30)
    offsets = {p.date_offset_days(f"P{i}") for i in range(200)}
    assert offsets <= set(range(-30, 0)) and len(offsets) > 20  # never 0, spread over the range
    d1, d2 = dt.date(2004, 2, 27), dt.date(2005, 3, 1)
    s1, s2 = p.shift_date(d1, "P7"), p.shift_date(d2, "P7")
    assert (s2 - s1) == (d2 - d1) and s1 != d1
    deid = Deidentifier(DeidSettings(max_shift_days=30), pseudonymizer=p)
    a, b = deid.dicom_date("20040227", "P7"), deid.dicom_date("20050301", "P7")
    assert (parse_date(b) - parse_date(a)).days == 368  # hand count: 2004-02-27 -> 2005-03-01 (leap day)
    assert parse_date(a) == s1


def test_dicom_date_helpers_hand_values():
    assert shift_dicom_date("20000301", -1) == "20000229"  # leap year
    assert shift_dicom_date("20010101", -1) == "20001231"
    assert shift_dicom_date("20050415102100.00", -10) == "20050405102100.00"  # DT keeps the time
    assert shift_dicom_date("", -5) == ""
    with pytest.raises(ValueError):
        shift_dicom_date("15.04.2005", 1)
    assert year_only_dicom_date("20050415102100.00") == "20050701"
    assert parse_date("04.03.1961") == dt.date(1961, 3, 4)
    assert parse_date("04/03/1961") == dt.date(1961, 3, 4)
    assert parse_date("1961-03-04T10:00") == dt.date(1961, 3, 4)
    assert parse_date("19610231") is None and parse_date("hello") is None


def test_year_mode_and_disabled():
    p = Pseudonymizer(SECRET)
    year = Deidentifier(DeidSettings(dates="year"), pseudonymizer=p)
    assert year.date(dt.date(2003, 11, 30), "P1") == dt.date(2003, 7, 1)
    assert year.date("30.11.2003", "P1") == dt.date(2003, 7, 1)
    assert year.date(dt.datetime(2003, 11, 30, 14, 5), "P1") == dt.datetime(2003, 7, 1)
    assert year.dicom_date("20031130", "P1") == "20030701"
    off = Deidentifier(DeidSettings(enabled=False))
    assert off.date(dt.date(2003, 11, 30), "P1") == dt.date(2003, 11, 30)
    assert off.uid("1.2.3") == "1.2.3" and off.dicom_date("20031130", "P1") == "20031130"
    assert off.run_info()["enabled"] is False and "warning" in off.run_info()


@pytest.mark.parametrize(
    "value,expected",
    [("093Y", "089Y"), ("089Y", "089Y"), ("045Y", "045Y"), ("120Y", "089Y"), ("93Y", "089Y"), ("999M", "999M"), ("006M", "006M"), ("010W", "010W"),
     (95, 89.0), (89.5, 89.0), (42, 42.0), ("abc", None), ("", None)],
)
def test_age_caps(value, expected):
    assert cap_age(value, 89) == expected


def test_deidentifier_age():
    d = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET))
    assert d.age(93) == 89.0 and d.age("093Y") == 89.0 and d.age(50.5) == 50.5 and d.age(None) is None
    assert d.dicom_age("093Y") == "089Y" and d.dicom_age("junk") == ""
    assert age_years("018M") == 1.5


# --------------------------------------------------------------------------- settings


def test_settings_validation():
    with pytest.raises(ConfigError, match="deid.yaml: datez"):
        validate(DeidSettings, {"datez": "shift"}, source="deid.yaml")
    with pytest.raises(ConfigError, match="max_shift_days"):
        validate(DeidSettings, {"max_shift_days": 0}, source="deid.yaml")
    with pytest.raises(ConfigError, match="dates"):
        validate(DeidSettings, {"dates": "drop"}, source="deid.yaml")
    with pytest.raises(ConfigError, match="deid.yaml: uid_root"):
        validate(DeidSettings, {"uid_root": "1.2.03"}, source="deid.yaml")
    with pytest.raises(ConfigError, match="deid.yaml: prefix"):
        validate(DeidSettings, {"prefix": "BM-"}, source="deid.yaml")
    assert validate(DeidSettings, {"uid_root": "1.2.826.0.1.3680043.10.99"}).uid_root == "1.2.826.0.1.3680043.10.99"


# --------------------------------------------------------------------------- linkage table


def test_linkage_table_owner_only_outside_out(tmp_path):
    d = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET))
    ids = ["STS_001", "Doe, John 12", "P3"]
    pseudo = {i: d.patient_id(i) for i in ids}
    out = tmp_path / "OUT"
    out.mkdir()
    with pytest.raises(PrivacyError, match="inside the output folder"):
        d.write_linkage_table(out / "keys" / "link.csv", forbidden_root=out)
    with pytest.raises(PrivacyError):
        d.write_linkage_table(out, forbidden_root=out)
    assert not (out / "keys").exists()
    path = d.write_linkage_table(tmp_path / "private" / "link.csv", forbidden_root=out)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["original_id"]: r["pseudonym"] for r in rows} == pseudo  # the comma survives
    assert not any(p.name.startswith(".") for p in path.parent.iterdir())  # no temp file left
