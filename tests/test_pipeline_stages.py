"""The declared stages: registry order, and a stage added as one module (with its own config section)."""

from __future__ import annotations

import sys
import textwrap

import pytest
import yaml

from biomarkers.errors import ConfigError
from biomarkers.pipeline import Pipeline, load_config, registry
from biomarkers.pipeline import config as pconfig
from biomarkers.pipeline import stage as pstage
from biomarkers.pipeline import stages as pstages
from biomarkers.pipeline.demo import DEMO_PARAMS

QC_MODULE = '''
from biomarkers.config import Settings
from biomarkers.report import RunReport

from ..stage import Stage
from .ingest import MANIFEST

REPORT = "qc/report.json"


class QcSettings(Settings):
    window: int = 400


def key(ctx):
    return {"manifest": ctx.hash_out(MANIFEST), "settings": ctx.cfg.qcprobe.model_dump(mode="json")}


def run(ctx):
    rep = RunReport("qcprobe")
    rep.add("probe", "done", window=ctx.cfg.qcprobe.window)
    return rep, {}


STAGE = Stage("qcprobe", order=15, upstream=("ingest",), key=key, run=run, outputs=(REPORT,), settings=QcSettings)
'''


def test_registry_runs_the_stages_in_the_documented_order():
    core = ["ingest", "extract", "clinical", "link", "tracking", "experiments", "release"]
    names = [s.name for s in registry()]
    assert [n for n in names if n in core] == core  # other stages (qc, ...) may sit between them
    assert len(set(names)) == len(names)
    assert [s.name for s in registry() if s.deferred] == ["tracking"]
    for s in registry():  # every output is a path relative to OUT
        assert all(not o.startswith("/") for o in s.outputs), s


@pytest.fixture
def extra_stage(tmp_path):
    """A stage module ``qcprobe`` placed on the stages package's path (as if added to the folder)."""
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "qcprobe.py").write_text(textwrap.dedent(QC_MODULE))
    pstages.__path__.append(str(folder))
    pstage.registry.cache_clear()
    pconfig.config_model.cache_clear()
    yield
    pstages.__path__.remove(str(folder))
    sys.modules.pop("biomarkers.pipeline.stages.qcprobe", None)
    pstage.registry.cache_clear()
    pconfig.config_model.cache_clear()


def test_one_module_adds_a_stage_and_its_config_section(tmp_path, extra_stage):
    (tmp_path / "dicom").mkdir()
    (tmp_path / "ct.yaml").write_text(yaml.safe_dump(DEMO_PARAMS["ct"]))
    data = {"source": {"dicom": "dicom"}, "out": "out", "executor": "serial", "tracking": {"enabled": False},
            "extract": {"params": "ct.yaml"}, "qcprobe": {"window": 350}}
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(data))
    cfg = load_config(p)
    assert cfg.qcprobe.window == 350
    assert [s.name for s in registry()][:3] == ["ingest", "qcprobe", "extract"]
    plan = Pipeline(cfg).plan()
    assert list(plan)[:3] == ["ingest", "qcprobe", "extract"] and list(plan) == [s.name for s in registry()]
    assert plan["qcprobe"].status == "planned" and "dataset/manifest.parquet not found" in plan["qcprobe"].reason
    data["qcprobe"] = {"windw": 1}
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"qcprobe\.windw: unknown key"):
        load_config(p)


def test_a_stage_before_its_upstream_is_refused(tmp_path, extra_stage):
    mod = tmp_path / "extra" / "qcprobe.py"
    mod.write_text(mod.read_text().replace("order=15", "order=5"))
    sys.modules.pop("biomarkers.pipeline.stages.qcprobe", None)
    pstage.registry.cache_clear()
    with pytest.raises(ConfigError, match=r"'qcprobe': upstream \['ingest'\] must exist and have a smaller order"):
        registry()


def test_pipelines_is_a_compatibility_import():
    import pipelines
    from pipelines.demo import DEMO_PARAMS as params

    import biomarkers.pipeline

    assert pipelines.run_pipeline is biomarkers.pipeline.run_pipeline and pipelines.Pipeline is Pipeline
    assert params is DEMO_PARAMS
