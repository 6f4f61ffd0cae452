"""Issue 14 item 7: survival experiments through the pipeline's experiments stage (the summary used to sort by
``auc`` and raise KeyError), and stage counts (the link stage reported ``0 done`` after linking everyone)."""

from __future__ import annotations

import pandas as pd

from biomarkers.modeling.simulate import synthetic_survival_table


def test_survival_summary_sorted_by_its_primary_metric(tmp_path):
    from biomarkers.modeling import run_experiment
    from biomarkers.modeling.spec import ExperimentSpec
    from biomarkers.pipeline.stages.experiments import experiment_summary

    table = synthetic_survival_table(60, 12, 2, signal=1.0, seed=1)
    table.to_parquet(tmp_path / "t.parquet")
    spec = ExperimentSpec.model_validate({
        "name": "surv", "input": {"table": str(tmp_path / "t.parquet")},
        "target": {"kind": "survival", "column": "event", "time": "time_days", "positive": 1},
        "pipelines": [{"name": "cox", "select": {"method": "univariate", "k": 3}, "model": {"type": "cox"}},
                      {"name": "cox_all", "model": {"type": "cox"}}],
        "validation": {"outer_folds": 3, "inner_folds": 2, "bootstrap": 50, "seed": 0}})
    res = run_experiment(spec, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    s = experiment_summary("surv", res)
    assert s["metric"] == "c_index"
    got = [r["c_index"] for r in s["leaderboard"]]
    assert got == sorted(got, reverse=True) and len(got) == 2
    assert {"c_index_ci_low", "c_index_ci_high"} <= set(s["leaderboard"][0])


def test_link_stage_counts_every_linked_patient(tmp_path, monkeypatch):
    from biomarkers.pipeline.stages import link

    class Ctx:  # the link stage's only needs: its config's clinical schema and OUT paths
        def __init__(self, cfg, out):
            self.cfg, self.out = cfg, out

        def path(self, rel):
            return self.out / rel

    from types import SimpleNamespace

    from biomarkers.features.naming import WIDE_TABLE

    (tmp_path / "features").mkdir()
    (tmp_path / "clinical").mkdir()
    wide = pd.DataFrame({"patient_id": ["BM-A", "BM-B", "BM-C"], "study_uid": "s", "series_uid": ["1", "2", "3"],
                         "modality": "CT", "roi": "GTV", "original_firstorder_Mean": [1.0, 2.0, 3.0]})
    wide.to_parquet(tmp_path / "features" / WIDE_TABLE)
    pd.DataFrame({"patient_id": ["BM-A", "BM-B", "BM-D"], "centre": "c1", "age": [50, 60, 70]}).to_parquet(
        tmp_path / "clinical" / "clinical.parquet")
    schema = SimpleNamespace(join="series", how="inner")
    monkeypatch.setattr(link.clinical, "schema", lambda cfg: schema)  # the pipeline config's join settings
    rep, details = link.run(Ctx(None, tmp_path))
    assert rep.counts() == {"done": 2, "skipped": 2, "failed": 0}
    assert details["patients_linked"] == 2
