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
def stage_modules(tmp_path):
    """Places stage modules (``{name: source}``) on the stages package's path, as if added to the folder."""
    folder = tmp_path / "extra"
    folder.mkdir()
    added = []

    def add(modules: dict[str, str]) -> None:
        for name, source in modules.items():
            (folder / f"{name}.py").write_text(textwrap.dedent(source))
            added.append(name)
        pstage.registry.cache_clear()
        pconfig.config_model.cache_clear()

    pstages.__path__.append(str(folder))
    yield add
    pstages.__path__.remove(str(folder))
    for name in added:
        sys.modules.pop(f"biomarkers.pipeline.stages.{name}", None)
    pstage.registry.cache_clear()
    pconfig.config_model.cache_clear()


@pytest.fixture
def extra_stage(stage_modules):
    """A stage module ``qcprobe`` added to the stages."""
    stage_modules({"qcprobe": QC_MODULE})


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


BUGGY_STAGES = {
    # a key with a bug (not a BiomarkersError): the stage fails with the exception, its downstream stage is not run
    "keybug": """
        from ..stage import Stage

        def key(ctx):
            return {"window": ctx.cfg.keybug_settings.window}  # AttributeError: no such section

        STAGE = Stage("keybug", order=1, key=key, run=lambda ctx: (None, {}), outputs=("keybug.json",))
    """,
    "afterbug": """
        from ..stage import Stage

        STAGE = Stage("afterbug", order=2, upstream=("keybug",), key=lambda ctx: {}, run=lambda ctx: (None, {}))
    """,
    # a check with a bug: the stage fails (not the run), the others are validated and run
    "checkbug": """
        from ..stage import Stage

        def check(ctx):
            return len(ctx.cfg.source.dicom)  # TypeError: a Path has no len()

        STAGE = Stage("checkbug", order=3, key=lambda ctx: {}, run=lambda ctx: (None, {}), check=check)
    """,
    # a healthy stage beside them runs
    "fine": """
        from biomarkers.report import RunReport

        from ..stage import Stage

        def run(ctx):
            rep = RunReport("fine")
            rep.add("probe", "done")
            return rep, {}

        STAGE = Stage("fine", order=4, key=lambda ctx: {"n": 1}, run=run)
    """,
}


def test_a_stage_whose_key_or_check_raises_fails_alone(tmp_path, stage_modules, capsys):
    """Any exception from a stage's key or check (a bug, not only a BiomarkersError) fails that stage with the
    exception in the run report; downstream stages are not run, saying why; the run ends with exit status 2."""
    import json

    from biomarkers.cli import main

    stage_modules(BUGGY_STAGES)
    (tmp_path / "dicom").mkdir()  # empty: ingest fails with its own reason, extract is not run
    (tmp_path / "ct.yaml").write_text(yaml.safe_dump(DEMO_PARAMS["ct"]))
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"source": {"dicom": "dicom"}, "out": "out", "executor": "serial",
                                 "tracking": {"enabled": False}, "qc": {"enabled": False},
                                 "extract": {"params": "ct.yaml"}}))
    plan = Pipeline(load_config(p)).plan()  # a dry run reports the failures too
    assert plan["keybug"].status == "failed" and "AttributeError" in plan["keybug"].reason
    assert main(["run", str(p)]) == 2
    assert "stage(s)" in capsys.readouterr().err
    rep = json.loads((tmp_path / "out" / "run_report.json").read_text())
    st = rep["stages"]
    assert st["keybug"]["status"] == "failed" and st["keybug"]["reason"].startswith("AttributeError: "), st["keybug"]
    assert "keybug_settings" in st["keybug"]["reason"]
    assert st["afterbug"] == dict(st["afterbug"], status="failed", reason="not run: upstream stage keybug failed")
    assert st["checkbug"]["status"] == "failed" and st["checkbug"]["reason"].startswith("TypeError: ")
    assert st["fine"]["status"] == "ran" and st["fine"]["counts"]["done"] == 1
    assert st["ingest"]["status"] == "failed" and "no DICOM file found" in st["ingest"]["reason"]
    assert st["extract"]["reason"] == "not run: upstream stage ingest failed"
    failed = {c["case"] for c in rep["cases"] if c["status"] == "failed"}
    assert {"stage/keybug", "stage/afterbug", "stage/checkbug", "stage/ingest"} <= failed


@pytest.mark.parametrize("how", ["delete", "overwrite"])
def test_lost_cases_of_a_cached_stage_run_it_again(tmp_path, stage_modules, how):
    """The cases a cached stage replays into the run report (``.pipeline/<stage>_cases.json``) are recorded with
    its outputs: deleted or changed, the stage runs again and its cases are in the report (not 0 of them)."""
    stage_modules({"fine": BUGGY_STAGES["fine"]})
    (tmp_path / "dicom").mkdir()
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"source": {"dicom": "dicom"}, "out": "out", "executor": "serial",
                                 "tracking": {"enabled": False}, "qc": {"enabled": False},
                                 "extract": {"enabled": False, "params": "x.yaml"}}))

    def run():
        pipe = Pipeline(load_config(p))
        rep = pipe.run()
        return pipe.stages["fine"].status, [c.case for c in rep.cases if c.stage == "fine"]

    assert run() == ("ran", ["probe"])
    assert run() == ("cached", ["probe"])
    cases = tmp_path / "out" / ".pipeline" / "fine_cases.json"
    if how == "delete":
        cases.unlink()
    else:
        cases.write_text(cases.read_text().replace('"probe"', '"other"'))
    assert run() == ("ran", ["probe"])
