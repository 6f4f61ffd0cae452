"""Issue 14 item 6: schema and parameter-file errors name the wrong key and why, one line per problem,
without library internals (pydantic union branches, pykwalify's ``<SchemaError ...>``)."""

from __future__ import annotations

import copy

import pytest
import yaml

from biomarkers.errors import ConfigError

INTERNALS = ("function-after", "lax-or-strict", "json-or-python", "SchemaError", "pykwalify", "union[",
             "errors.pydantic.dev", "ClinicalSchema]")


def test_inline_clinical_schema_typos(tmp_path):
    from biomarkers.pipeline import load_config
    from biomarkers.pipeline.demo import DEMO_SCHEMA

    s = copy.deepcopy(DEMO_SCHEMA)
    var = next(iter(s["variables"]))
    s["variables"][var]["tyep"] = s["variables"][var].pop("type")
    s["joinn"] = "series"
    (tmp_path / "ct.yaml").write_text("setting: {binWidth: 25}\n")
    cfg = {"name": "x", "source": {"dicom": str(tmp_path), "clinical": [str(tmp_path / "*.csv")]},
           "out": str(tmp_path / "out"), "clinical": {"schema": s}, "extract": {"params": {"CT": str(tmp_path / "ct.yaml")}}}
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    lines = str(e.value).splitlines()
    assert lines == [f"{p}: clinical.schema.variables.{var}.tyep: unknown key (check spelling; see the config "
                     "reference in README.md)",
                     f"{p}: clinical.schema.joinn: unknown key (check spelling; see the config reference in README.md)"]
    assert not any(w in str(e.value) for w in INTERNALS)


def test_schema_file_value_errors(tmp_path):
    from biomarkers.clinical.schema import load_schema
    from biomarkers.pipeline.demo import DEMO_SCHEMA

    s = copy.deepcopy(DEMO_SCHEMA)
    var = next(iter(s["variables"]))
    s["variables"][var]["type"] = "flaot"
    p = tmp_path / "schema.yaml"
    p.write_text(yaml.safe_dump(s))
    with pytest.raises(ConfigError) as e:
        load_schema(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: variables.{var}.type: ") and "'flaot'" in msg and len(msg.splitlines()) == 1, msg
    assert not any(w in msg for w in INTERNALS)


def test_parameter_file_typos_one_line_each(tmp_path):
    from biomarkers.features.params import load_params

    p = tmp_path / "ct.yaml"
    p.write_text("setting:\n  binWidht: 25\n  label: [1]\n  binCount: many\n")
    with pytest.raises(ConfigError) as e:
        load_params(p)
    assert sorted(str(e.value).splitlines()) == sorted([
        f"{p}: setting.binWidht: unknown pyradiomics key; did you mean 'binWidth'?",
        f"{p}: setting.label: '[1]' is not of type int",
        f"{p}: setting.binCount: 'many' is not of type int"])
    assert not any(w in str(e.value) for w in INTERNALS)


def test_parameter_file_error_on_the_command_line(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "ct.yaml"
    p.write_text("setting:\n  binWidht: 25\n")
    (tmp_path / "ds").mkdir()
    r = subprocess.run([sys.executable, "-m", "biomarkers", "extract", str(tmp_path / "ds"), "--params", str(p),
                        "--out", str(tmp_path / "f"), "--dry-run"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {p}: setting.binWidht: unknown pyradiomics key; did you mean 'binWidth'?"]
