"""Run an experiment spec into MLflow; read the leaderboard back; score new patients.

MLflow layout of one :func:`run_experiment` call:

* parent run (tag ``biomarkers.run_kind=experiment``): flattened spec as params, the spec
  as run (defaults filled in, table path made relative/hashed) as artifact ``spec/<file name>``, the input dataset (``mlflow.data``), tags
  ``biomarkers.best_pipeline`` and metric ``best_auc``;
* one child run per pipeline (tag ``biomarkers.run_kind=pipeline``, run name = pipeline
  name): pipeline params, the input dataset, metrics ``auc, auc_ci_low, auc_ci_high``, the
  same for ``balanced_accuracy, sensitivity, specificity, brier``, ``fold_auc`` (one step
  per outer fold), ``permutation_p_value`` (if requested), ``heldout_*`` (if a held-out
  centre is set), ``n_patients, n_positive, n_features``; artifacts ``plots/roc.png``,
  ``plots/calibration.png``, ``features/selected_features.csv`` (feature, n_folds,
  frequency, in_final_model), ``predictions/oof.csv`` (pseudonymised id, centre, target,
  probability) and the final model (``model``; refitted on all patients, signature, input
  example, ``predict`` returns [P(0), P(1)]).
* the best pipeline's model (by AUC) is registered as ``registered_model`` if set.

Survival targets log ``c_index`` (+ CI), ``fold_c_index``, ``plots/km_risk_groups.png``,
``predictions/oof.csv`` with time, event and risk_score; the model's ``predict`` is the risk score.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .. import tracking
from ..errors import BiomarkersError, ConfigError, InputError
from ..release.reader import read_table
from ..report import RunReport
from .data import Dataset, build_dataset
from .pipelines import build_pipeline, selected_features
from .spec import ExperimentSpec, PipelineSpec, load_spec
from .validation import CVResult, HeldOutResult, fit_with_search, heldout_centre, nested_cv, predict_score, strata

log = logging.getLogger("biomarkers.modeling")

#: Columns of the leaderboard returned by :func:`leaderboard`.
LEADERBOARD_METRICS = [
    "auc", "auc_ci_low", "auc_ci_high", "balanced_accuracy", "sensitivity", "specificity", "brier",
    "c_index", "c_index_ci_low", "c_index_ci_high", "permutation_p_value", "heldout_auc", "heldout_c_index",
]


@dataclass
class PipelineResult:
    name: str
    run_id: str
    metrics: dict[str, float]
    cv: CVResult
    heldout: HeldOutResult | None
    selected: pd.DataFrame
    model_uri: str | None
    final_model: Any = None


@dataclass
class ExperimentResult:
    experiment: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    pipelines: list[PipelineResult] = field(default_factory=list)
    best: str | None = None
    registered_version: str | None = None
    dataset_digest: str | None = None
    report: RunReport | None = None

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"pipeline": p.name, **p.metrics, "run_id": p.run_id} for p in self.pipelines])


def _skops_types(model) -> list[str]:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    allowed = ("biomarkers.", "sklearn.", "sksurv.", "numpy.", "scipy.", "builtins.", "collections.", "pandas.")
    bad = [t for t in untrusted if not t.startswith(allowed)]
    if bad:
        raise RuntimeError(f"model contains types that cannot be saved safely: {bad}")
    return untrusted


def _log_model(pipe, ds: Dataset, spec: ExperimentSpec, registered_name: str | None):
    import mlflow
    import sklearn
    from mlflow.models import infer_signature

    example = ds.X.head(5)
    survival = ds.kind == "survival"
    out = pipe.predict(example) if survival else pipe.predict_proba(example)
    signature = infer_signature(example, out)
    reqs = [f"scikit-learn=={sklearn.__version__}", f"mlflow=={mlflow.__version__}", "neuroHarmonize", "biomarkers"]
    if survival:
        import sksurv

        reqs.append(f"scikit-survival=={sksurv.__version__}")
    info = mlflow.sklearn.log_model(
        pipe,
        name="model",
        signature=signature,
        input_example=example,
        pyfunc_predict_fn="predict" if survival else "predict_proba",
        pip_requirements=reqs,
        serialization_format="skops",
        skops_trusted_types=_skops_types(pipe),
        registered_model_name=registered_name,
        metadata={"id_column": spec.input.id_column, "target": spec.target.column,
                  "positive": str(spec.target.positive), "centre_column": spec.input.centre_column or "",
                  "target_kind": ds.kind},
    )
    return info


def _metric_dict(prefix: str, metrics: dict[str, float], ci: dict[str, tuple[float, float]]) -> dict[str, float]:
    out = {}
    for m in metrics:
        out[f"{prefix}{m}"] = metrics[m]
        lo, hi = ci.get(m, (float("nan"), float("nan")))
        out[f"{prefix}{m}_ci_low"] = lo
        out[f"{prefix}{m}_ci_high"] = hi
    return out


def _spec_params(spec: ExperimentSpec, table_source: str) -> dict[str, str]:
    d = spec.model_dump(mode="json", exclude={"pipelines", "description"})
    d["input"]["lake" if d["input"].get("lake") else "table"] = table_source  # never an absolute path
    return tracking.flatten(d)


def run_pipeline(pspec: PipelineSpec, ds: Dataset, spec: ExperimentSpec, permutations: int | None = None):
    """Nested CV (+ held-out centre) and the final refit of one pipeline, without MLflow."""
    val = spec.validation
    pipe = build_pipeline(pspec, ds.feature_columns, ds.centre_column, seed=val.seed)
    held = None
    if val.heldout_centre is not None:
        test = (ds.centres == str(val.heldout_centre)).to_numpy()
        held = heldout_centre(pipe, pspec.grid, ds.X, ds.y, ds.centres, val.heldout_centre, val)
        cv = nested_cv(pipe, pspec.grid, ds.X.loc[~test].reset_index(drop=True), ds.y[~test], val, permutations)
    else:
        cv = nested_cv(pipe, pspec.grid, ds.X, ds.y, val, permutations)
    final, best_params = fit_with_search(pipe, pspec.grid, ds.X, ds.y, val, val.seed)
    return cv, held, final, best_params


def run_experiment(
    spec: ExperimentSpec | str | os.PathLike,
    tracking_uri: str | None = None,
    table: str | os.PathLike | None = None,
    permutations: int | None = None,
) -> ExperimentResult:
    """Run every pipeline of ``spec`` (a spec or a YAML path) and log it to MLflow.

    ``table`` overrides ``spec.input.table``; ``permutations`` overrides
    ``validation.permutations``. Returns the per-pipeline results (metrics as logged).
    """
    with warnings.catch_warnings():
        for msg in ("The specified dataset source can be interpreted", "Hint: Inferred schema contains integer",
                    "Saving scikit-learn models in the pickle"):
            warnings.filterwarnings("ignore", message=msg)
        return _run_experiment(spec, tracking_uri, table, permutations)


def _run_experiment(spec, tracking_uri, table, permutations) -> ExperimentResult:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    spec_path: Path | None = None
    if not isinstance(spec, ExperimentSpec):
        spec_path = Path(spec)
        spec = load_spec(spec_path)
    if table is not None:
        spec = spec.model_copy(update={"input": spec.input.model_copy(update={"table": Path(table).resolve(),
                                                                               "lake": None})})
    dataset_kw: dict = {}
    if spec.input.lake is not None:  # LAKE@VERSION: MLflow records the lake version as source and digest
        from ..lake import read_lake_ref

        df, lake_uri, digest, version = read_lake_ref(spec.input.lake)
        table_path = Path(lake_uri.rstrip("/").rsplit("/", 1)[-1])
        lake_src = lake_uri if "://" in lake_uri else tracking.safe_source(lake_uri)
        dataset_kw = {"source": f"{lake_src}@{version}", "digest": digest}
    else:
        table_path = Path(spec.input.table)
        df = read_table(table_path)
    ds = build_dataset(df, spec, source=str(table_path.name))
    for pspec in spec.pipelines:  # configuration errors (e.g. grid keys) before anything is logged
        build_pipeline(pspec, ds.feature_columns, ds.centre_column, seed=spec.validation.seed)
    source = dataset_kw.get("source") or tracking.safe_source(table_path)
    uri = tracking.tracking_uri(tracking_uri)
    # the spec as run (all defaults filled in); input.table rendered like the dataset source so that
    # no absolute path (which may contain a person's name) reaches the tracking store
    dumped = spec.model_dump(mode="json")
    dumped["input"]["lake" if dumped["input"].get("lake") else "table"] = source
    spec_yaml = yaml.safe_dump(dumped, sort_keys=False)
    t0 = time.time()
    with tracking.parent_run(spec.name, uri, run_name=f"{spec.name}", tags={"biomarkers.spec": spec_path.name if spec_path else "<object>"}) as parent:
        exp_id = parent.info.experiment_id
        mlflow.log_params(_spec_params(spec, source))
        mlflow.log_text(spec_yaml, f"spec/{spec_path.name if spec_path else 'spec.yaml'}")
        dset = tracking.log_feature_set(table_path, name=table_path.stem, df=ds.frame.drop(columns=[spec.input.id_column]),
                                        targets=spec.target.column, **dataset_kw)
        mlflow.log_metrics({"n_patients": len(ds.y), "n_positive": int(ds.strata.sum()), "n_features": len(ds.feature_columns)})
        if ds.dropped_features:
            mlflow.log_text(pd.Series(ds.dropped_features, name="reason").to_csv(index_label="feature"),
                            "features/dropped_features.csv")
        result = ExperimentResult(spec.name, exp_id, parent.info.run_id, uri, dataset_digest=dset.digest)
        report = RunReport("experiment")
        result.report = report
        for pspec in spec.pipelines:
            t1 = time.time()
            try:
                pr = _run_child(pspec, ds, spec, table_path, permutations, plt, dataset_kw)
            except BiomarkersError:
                raise
            except Exception as err:  # noqa: BLE001 - one failing pipeline does not stop the others
                reason = f"{type(err).__name__}: {err}"
                log.warning("pipeline %s failed: %s", pspec.name, reason)
                report.add(pspec.name, "failed", reason[:500])
                continue
            result.pipelines.append(pr)
            report.add(pspec.name, "done", run_id=pr.run_id, seconds=round(time.time() - t1, 1),
                       **{pr.cv.primary: pr.metrics[pr.cv.primary]})
        mlflow.log_text(__import__("json").dumps(report.to_dict(), indent=2, default=str), "report.json")
        if not result.pipelines:
            raise InputError(f"experiment {spec.name!r}: every pipeline failed: {report.reasons()}")
        key = result.pipelines[0].cv.primary
        best = max(result.pipelines, key=lambda r: (np.nan_to_num(r.metrics[key], nan=-1), -r.metrics.get("brier", 0.0)))
        result.best = best.name
        mlflow.set_tag("biomarkers.best_pipeline", best.name)
        mlflow.log_metric(f"best_{key}", best.metrics[key])
        mlflow.log_metric("duration_s", time.time() - t0)
        if spec.registered_model and best.model_uri:
            mv = mlflow.register_model(best.model_uri, spec.registered_model,
                                       tags={"pipeline": best.name, "experiment": spec.name})
            result.registered_version = str(mv.version)
            mlflow.set_tag("biomarkers.registered_model", f"{spec.registered_model}/{mv.version}")
    return result


def _run_child(pspec: PipelineSpec, ds: Dataset, spec: ExperimentSpec, table_path: Path, permutations, plt,
               dataset_kw: dict | None = None) -> PipelineResult:
    """One child run: nested CV, held-out centre, final refit, metrics, plots, features, model.

    On an error the child run is tagged ``biomarkers.status=failed`` with the reason and ends FAILED.
    """
    import mlflow

    t1 = time.time()
    with tracking.child_run(pspec.name, tags={"biomarkers.pipeline": pspec.name}) as child:
        mlflow.log_params(tracking.flatten(pspec.model_dump(mode="json"), "pipeline"))
        tracking.log_feature_set(table_path, name=table_path.stem,
                                 df=ds.frame.drop(columns=[spec.input.id_column]), targets=spec.target.column,
                                 **(dataset_kw or {}))
        try:
            cv, held, final, best_params = run_pipeline(pspec, ds, spec, permutations)
        except Exception as err:
            mlflow.set_tags({"biomarkers.status": "failed", "biomarkers.error": f"{type(err).__name__}: {err}"[:5000]})
            raise
        mlflow.set_tag("biomarkers.status", "done")
        metrics = _metric_dict("", cv.metrics, cv.ci)
        metrics.update(n_patients=len(cv.y), n_positive=int(strata(cv.y).sum()), n_features=len(ds.feature_columns))
        if cv.permutation_p is not None:
            metrics["permutation_p_value"] = cv.permutation_p
            metrics[f"permutation_{cv.primary}_mean"] = float(np.mean(cv.permutation_scores))
        if held is not None:
            metrics.update(_metric_dict("heldout_", held.metrics, held.ci))
            metrics["heldout_n_patients"] = held.n_test
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        for i, a in enumerate(cv.fold_scores):
            if np.isfinite(a):
                mlflow.log_metric(f"fold_{cv.primary}", a, step=i)
        if best_params:
            mlflow.log_params({f"final.{k}": str(v) for k, v in best_params.items()})
        # artifacts
        oof_p = cv.oof_mean
        k = cv.primary
        label = "AUC" if k == "auc" else "C-index"
        auc_txt = f"{label} {cv.metrics[k]:.2f} [{cv.ci[k][0]:.2f}, {cv.ci[k][1]:.2f}]"
        from .plots import calibration_figure, km_figure, roc_figure

        if ds.kind == "survival":
            figs = {"plots/km_risk_groups.png": km_figure(cv.y, oof_p, f"{pspec.name}: OOF risk groups", auc_txt)}
        else:
            figs = {"plots/roc.png": roc_figure(cv.y, oof_p, f"{pspec.name}: nested CV", auc_txt),
                    "plots/calibration.png": calibration_figure(cv.y, oof_p, f"{pspec.name}: calibration")}
        for name, fig in figs.items():
            mlflow.log_figure(fig, name)
            plt.close(fig)
        sel = cv.feature_frequency()
        final_feats = set(selected_features(final))
        sel["in_final_model"] = sel["feature"].isin(final_feats)
        extra = sorted(final_feats - set(sel["feature"]))
        if extra:
            sel = pd.concat([sel, pd.DataFrame({"feature": extra, "n_folds": 0, "frequency": 0.0,
                                                "in_final_model": True})], ignore_index=True)
        mlflow.log_text(sel.to_csv(index=False), "features/selected_features.csv")
        ids = ds.ids if held is None else ds.ids[(ds.centres != str(spec.validation.heldout_centre)).to_numpy()]
        if ds.kind == "survival":
            oof_df = pd.DataFrame({spec.input.id_column: ids.to_numpy(), "time": cv.y["time"],
                                   "event": cv.y["event"].astype(int), "risk_score": oof_p})
        else:
            oof_df = pd.DataFrame({spec.input.id_column: ids.to_numpy(), "target": cv.y, "probability": oof_p})
        mlflow.log_text(oof_df.to_csv(index=False), "predictions/oof.csv")
        model_uri = None
        if spec.log_models:
            info = _log_model(final, ds, spec, None)
            model_uri = info.model_uri
            mlflow.set_tag("biomarkers.model_uri", model_uri)
        mlflow.log_metric("duration_s", time.time() - t1)
    log.info("%s: %s (%.0f s)", pspec.name, auc_txt, time.time() - t1)
    return PipelineResult(pspec.name, child.info.run_id, metrics, cv, held, sel, model_uri, final)


def _experiment(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    if exp is None and experiment.isdigit():
        try:
            exp = client.get_experiment(experiment)
        except Exception:  # noqa: BLE001
            exp = None
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise InputError(f"experiment {experiment!r} not found in the tracking store (experiments: {names})")
    return exp


def leaderboard(experiment: str, tracking_uri: str | None = None, parent_run_id: str | None = None) -> pd.DataFrame:
    """Child-run metrics of the latest (or given) parent run of ``experiment``, best AUC first.

    Read through :class:`mlflow.MlflowClient`, i.e. the numbers the MLflow UI shows.
    """
    c = tracking.client(tracking_uri)
    exp = _experiment(c, experiment)
    if parent_run_id is None:
        parents = c.search_runs([exp.experiment_id], "tags.`biomarkers.run_kind` = 'experiment'",
                                order_by=["attributes.start_time DESC"], max_results=1)
        if not parents:
            raise InputError(f"experiment {experiment!r} has no experiment run yet")
        parent_run_id = parents[0].info.run_id
    children = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=1000)
    rows = []
    for r in children:
        row: dict[str, Any] = {"pipeline": r.info.run_name,
                               "status": r.data.tags.get("biomarkers.status", r.info.status.lower())}
        for m in LEADERBOARD_METRICS:
            if m in r.data.metrics:
                row[m] = r.data.metrics[m]
        row["run_id"] = r.info.run_id
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    cols = ["pipeline"] + [m for m in LEADERBOARD_METRICS if m in df.columns] + ["status", "run_id"]
    key = "c_index" if "c_index" in df.columns and "auc" not in df.columns else "auc"
    if key not in df.columns:
        df[key] = np.nan
        cols.insert(1, key)
    return df[cols].sort_values(key, ascending=False, na_position="last").reset_index(drop=True)


def predict_table(model_uri: str, table: str | os.PathLike, tracking_uri: str | None = None) -> pd.DataFrame:
    """Score the rows of ``table`` with an MLflow model.

    Returns the id column (if present) and ``probability`` (of the positive class) or, for a
    survival model, ``risk_score`` (higher = earlier event; relative, not a probability).
    """
    import mlflow.pyfunc

    df = read_table(table)
    with tracking.using_tracking(tracking_uri):
        try:
            model = mlflow.pyfunc.load_model(model_uri)
        except Exception as err:  # noqa: BLE001
            raise InputError(f"cannot load model {model_uri!r}: {err}") from None
    meta = model.metadata
    schema = meta.get_input_schema()
    cols = schema.input_names() if schema is not None else list(df.columns)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{Path(table).name}: missing columns the model needs: {missing[:10]}"
                         f"{' ...' if len(missing) > 10 else ''}")
    md = meta.metadata or {}
    X = df[cols].copy()
    centre = md.get("centre_column") or None
    for c in cols:
        X[c] = X[c].astype(str) if c == centre else X[c].astype("float64")
    out = np.asarray(model.predict(X))
    if md.get("target_kind") == "survival":
        res = pd.DataFrame({"risk_score": out.astype(float)})
    else:
        res = pd.DataFrame({"probability": out[:, 1] if out.ndim == 2 else out})
    idc = md.get("id_column")
    if idc and idc in df.columns:
        res.insert(0, idc, df[idc].astype(str).to_numpy())
    return res
