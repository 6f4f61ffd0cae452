"""PipelineConfig validation, the shipped configs, dry runs and stage failures reported (not crashing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from biomarkers.cli import main
from biomarkers.errors import ConfigError
from biomarkers.synth import synthesize
from biomarkers.pipeline import Pipeline, config_from_dict, load_config
from biomarkers.pipeline.demo import DEMO_PARAMS, demo_config

REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, data: dict, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _minimal(tmp_path: Path) -> dict:
    (tmp_path / "dicom").mkdir(exist_ok=True)
    (tmp_path / "ct.yaml").write_text(yaml.safe_dump(DEMO_PARAMS["ct"]))
    return {"source": {"dicom": "dicom"}, "out": "out", "extract": {"params": "ct.yaml"}}


def test_unknown_key_names_file_and_key(tmp_path):
    data = _minimal(tmp_path)
    data["extract"]["parms"] = "x.yaml"
    p = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert f"{p}: extract.parms: unknown key" in str(err.value)
    data = _minimal(tmp_path)
    data["ingest"] = {"masks": {"roiz": {}}}
    with pytest.raises(ConfigError, match=r"ingest\.masks\.roiz: unknown key"):
        load_config(_write(tmp_path, data))


def test_deid_belongs_to_the_top_level_section(tmp_path):
    data = _minimal(tmp_path)
    data["ingest"] = {"deid": {"demo": True}}
    with pytest.raises(ConfigError, match=r"ingest: .*top-level 'deid' section"):
        load_config(_write(tmp_path, data))


def test_paths_are_relative_to_the_config_file(tmp_path):
    data = _minimal(tmp_path)
    data["tracking"] = {"uri": "runs/mlflow.db"}
    cfg = load_config(_write(tmp_path, data))
    assert cfg.source.dicom == (tmp_path / "dicom").resolve()
    assert cfg.out == (tmp_path / "out").resolve()
    assert cfg.extract.params == (tmp_path / "ct.yaml").resolve()
    assert cfg.tracking.uri == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve().as_posix()}"
    # the pipeline's de-identification section reaches ingest
    assert cfg.ingest_settings().deid == cfg.deid


def test_shipped_configs_validate():
    tpl = load_config(REPO / "configs" / "pipeline.yaml")
    assert tpl.name == "my-study" and tpl.experiments.run is False
    demo = load_config(REPO / "configs" / "demo.yaml")
    embedded = config_from_dict(demo_config(), REPO / "demo_out")
    # configs/demo.yaml is the embedded demo pipeline (same settings; paths point at demo_out/)
    same = lambda c: c.model_dump(mode="json", exclude={"source", "out", "extract", "tracking"}, by_alias=True)  # noqa: E731
    assert same(demo) == same(embedded)
    assert demo.out == embedded.out and demo.source == embedded.source
    assert demo.extract.params == embedded.extract.params and demo.tracking == embedded.tracking
    assert demo.deid.demo is True and demo.experiments.run is True


def test_missing_source_is_a_config_error(tmp_path):
    data = _minimal(tmp_path)
    data["source"]["dicom"] = "nowhere"
    with pytest.raises(ConfigError, match="source.dicom: .*nowhere is not a folder"):
        Pipeline(load_config(_write(tmp_path, data))).validate()


def test_dry_run_then_a_failing_stage_is_reported(tmp_path, capsys):
    synthesize(tmp_path / "cohort", patients=2, centres=1, seed=1, executor="serial", pet=False, ct_size=64)
    (tmp_path / "bad.yaml").write_text("setting: {binWidth: 25}\nfeatureClass: {notafeatureclass: null}\n")
    data = {"name": "t", "source": {"dicom": "cohort/dicom"}, "out": "out", "executor": "serial",
            "tracking": {"enabled": False}, "extract": {"params": "bad.yaml"}}
    cfg = _write(tmp_path, data)
    assert main(["run", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ingest       planned" in out and "experiments  disabled" in out
    assert not (tmp_path / "out" / "dataset").exists()  # a dry run converts nothing
    # the extract stage fails with its reason; ingest is done; the run report is written; exit status 2
    assert main(["run", str(cfg)]) == 2
    assert "stage(s) extract failed" in capsys.readouterr().err
    rep = json.loads((tmp_path / "out" / "run_report.json").read_text())
    assert rep["stages"]["ingest"]["status"] == "ran"
    assert rep["stages"]["extract"]["status"] == "failed"
    assert "bad.yaml" in rep["stages"]["extract"]["reason"]
    failed = [c for c in rep["cases"] if c["status"] == "failed"]
    assert any(c["case"] == "stage/extract" for c in failed)
    assert rep["counts"]["done"] >= 4  # 2 images + 2 masks
