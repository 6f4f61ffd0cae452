"""Build ``OUT/qc/index.html``: gather the cohort, render what changed, write the page.

Inputs (all optional but the manifest), found in ``OUT``:

* a pipeline OUT: ``dataset/`` (ingest), ``features/``, ``clinical/clinical.parquet``
  (centre per patient), ``analysis.parquet`` (centre-effect panel), ``experiments.json`` and
  ``run_report.json`` (MLflow runs and their plots);
* or an ingest OUT (``manifest.parquet`` in OUT itself), with ``features`` and ``clinical``
  given explicitly.

Outputs in ``OUT/qc/``: ``index.html`` (static, no network, inline CSS and JS),
``thumbs/`` (PNG thumbnails named by content key, see :mod:`biomarkers.qc.render`),
``assets/`` (the experiments' plots, re-encoded without metadata) and ``report.json``
(one case per card: done, cached or failed with the reason).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import write_json, write_text
from ..logs import echo
from ..report import CaseStatus, RunReport
from .render import IMAGE_VIEWS, MASK_VIEWS, render_item, roi_colour, thumb_key
from .settings import QcSettings

QC_DIR = "qc"
INDEX = "index.html"
THUMBS = "thumbs"
ASSETS = "assets"


@dataclass
class Layout:
    """Where the inputs of one report are (absolute paths; None when absent)."""

    out: Path
    dataset: Path
    features: Path | None = None
    clinical: Path | None = None
    analysis: Path | None = None
    experiments: Path | None = None
    run_report: Path | None = None

    @property
    def qc(self) -> Path:
        return self.out / QC_DIR

    @classmethod
    def find(cls, out: str | Path, features: str | Path | None = None, clinical: str | Path | None = None) -> "Layout":
        """The layout of a pipeline OUT (``OUT/dataset``) or an ingest OUT (``OUT/manifest.parquet``)."""
        out = Path(out).resolve()

        def opt(p) -> Path | None:
            return Path(p).resolve() if p is not None and Path(p).exists() else None

        if (out / "dataset" / "manifest.parquet").is_file():
            return cls(out, out / "dataset", opt(features) or opt(out / "features"),
                       opt(clinical) or opt(out / "clinical" / "clinical.parquet"), opt(out / "analysis.parquet"),
                       opt(out / "experiments.json"), opt(out / "run_report.json"))
        if (out / "manifest.parquet").is_file():
            return cls(out, out, opt(features), opt(clinical))
        raise InputError(f"{out}: neither a pipeline output (no dataset/manifest.parquet) nor an ingest output "
                         "(no manifest.parquet); run 'biomarkers run' or 'biomarkers ingest' first")


@dataclass
class Card:
    """One card of the report: a mask (series x ROI) or an image stack without a mask."""

    kind: str  # mask | image
    path: str  # manifest path (relative to the dataset folder); the DOM key
    patient_id: str
    modality: str
    roi: str = ""
    series_uid: str = ""
    image_path: str = ""
    status: str = "converted"  # manifest status
    reason: str = ""
    shape: str = ""
    spacing: str = ""
    flags: list[str] = field(default_factory=list)
    volume_ml: float | None = None
    voxel_count: int | None = None
    centre: str = "unknown"
    scanner: str = "unknown"
    units: str = ""
    extraction: str = ""  # done | skipped | failed | not run
    extraction_reasons: list[str] = field(default_factory=list)
    key: str = ""  # thumbnail key ("" when there is nothing to show)
    info: dict = field(default_factory=dict)  # render_item's card info
    values: dict = field(default_factory=dict)  # metric -> value (cohort distributions)
    outliers: list[str] = field(default_factory=list)
    cached: bool = False
    image_series: str = ""  # masks: the series of the image the mask is on

    @property
    def views(self) -> tuple[str, ...]:
        return MASK_VIEWS if self.kind == "mask" else IMAGE_VIEWS


def _s(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _f(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _sidecar(dataset: Path, rel: str) -> dict:
    p = dataset / (rel[: -len(".nii.gz")] + ".json" if rel.endswith(".nii.gz") else rel + ".json")
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _centres(layout: Layout) -> dict[str, str]:
    """Pseudonym -> centre, from the clinical table (``centre`` column) when there is one."""
    if layout.clinical is None:
        return {}
    import pandas as pd

    try:
        df = pd.read_parquet(layout.clinical) if layout.clinical.suffix != ".csv" else pd.read_csv(layout.clinical)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{layout.clinical}: cannot read the clinical table ({type(err).__name__}: {err})") from None
    if "patient_id" not in df.columns or "centre" not in df.columns:
        return {}
    return {str(p): _s(c) or "unknown" for p, c in zip(df["patient_id"], df["centre"])}


def _extraction(layout: Layout) -> dict[tuple, list[tuple[str, str]]]:
    """(patient, modality, image series, roi) -> [(status, reason)] from the feature report."""
    out: dict[tuple, list] = {}
    if layout.features is None or not (layout.features / "report.json").is_file():
        return out
    try:
        cases = json.loads((layout.features / "report.json").read_text()).get("cases", [])
    except ValueError:
        return out
    for c in cases:
        parts = str(c.get("case", "")).split("/")
        if len(parts) >= 4:
            out.setdefault(tuple(parts[:4]), []).append((c.get("status", ""), c.get("reason", "")))
    return out


def _ingest_problems(dataset: Path) -> list[dict]:
    """Skipped and failed cases of the ingest report (some have no manifest row)."""
    try:
        cases = json.loads((dataset / "report.json").read_text()).get("cases", [])
    except (OSError, ValueError):
        return []
    return [{"stage": "ingest", "case": c.get("case", ""), "status": c.get("status"), "reason": c.get("reason", "")}
            for c in cases if c.get("status") in ("skipped", "failed")]


def _content(layout: Layout, row: dict) -> str:
    """The voxel-content hash of a manifest row's file (a manifest without ``content_hash``: the file's hash)."""
    h = _s(row.get("content_hash"))
    if h:
        return h
    from ..io import sha256_file

    p = layout.dataset / _s(row.get("path"))
    return f"file:{sha256_file(p)}" if p.is_file() else f"missing:{_s(row.get('path'))}"


def collect(layout: Layout, settings: QcSettings) -> tuple[list[Card], list[dict]]:
    """The cards of the cohort (masks first, then images without a mask) and the problem list."""
    from ..manifest import read_manifest

    m = read_manifest(layout.dataset)
    centres = _centres(layout)
    extraction = _extraction(layout)
    rows = m.to_dict("records")
    images = {_s(r.get("path")): r for r in rows if r.get("kind") == "image" and _s(r.get("path"))}
    masked = {_s(r.get("image_path")) for r in rows if r.get("kind") == "mask"}
    sidecars: dict[str, dict] = {}
    cards: list[Card] = []
    render = settings.render_settings()
    for r in sorted(rows, key=lambda r: (r.get("kind") != "mask", _s(r.get("patient_id")), _s(r.get("path")))):
        kind, path = _s(r.get("kind")), _s(r.get("path"))
        if kind == "image" and (path in masked or not path):
            continue
        img_rel = _s(r.get("image_path")) if kind == "mask" else path
        if img_rel and img_rel not in sidecars:
            sidecars[img_rel] = _sidecar(layout.dataset, img_rel)
        sc = sidecars.get(img_rel, {})
        pid = _s(r.get("patient_id"))
        card = Card(kind, path, pid, _s(r.get("modality")), _s(r.get("roi")), _s(r.get("series_uid")), img_rel,
                    _s(r.get("status")) or "converted", _s(r.get("reason")), _s(r.get("shape")),
                    _s(r.get("spacing")), [f for f in _s(r.get("qc_flags")).split(";") if f],
                    _f(r.get("volume_ml")), int(r["voxel_count"]) if _f(r.get("voxel_count")) is not None else None,
                    centres.get(pid, "unknown"), _s((sc.get("acquisition") or {}).get("manufacturer")) or "unknown",
                    _s(sc.get("units")))
        if kind == "mask":
            card.image_series = _s(r.get("source_series_uid"))
            img = images.get(img_rel, {})
            for f in [f for f in _s(img.get("qc_flags")).split(";") if f and f not in card.flags]:
                card.flags.append(f)
            if not card.spacing:
                card.shape, card.spacing = _s(img.get("shape")), _s(img.get("spacing"))
            ex = extraction.get((pid, card.modality, card.image_series, card.roi), [])
            card.extraction = ("failed" if any(s == "failed" for s, _ in ex) else "skipped"
                               if any(s == "skipped" for s, _ in ex) else "done" if ex else "not run")
            card.extraction_reasons = sorted({why for s, why in ex if why})
            ok = card.status == "converted" and img_rel in images
            if ok:
                card.key = thumb_key(_content(layout, images[img_rel]), _content(layout, r), render,
                                     roi_colour(card.roi))
        elif card.status == "converted":
            card.key = thumb_key(_content(layout, r), None, render)
        cards.append(card)
    problems = [{"stage": "ingest", "case": c.path or f"{c.patient_id}/{c.modality}/{c.roi}", "status": c.status,
                 "reason": c.reason} for c in cards if c.status in ("skipped", "failed")]
    problems += [p for p in _ingest_problems(layout.dataset) if p["case"] not in {q["case"] for q in problems}
                 and not any(p["case"] and c.path.startswith(p["case"]) for c in cards)]
    for c in cards:
        for why in c.extraction_reasons:
            problems.append({"stage": "extract", "case": c.path, "status": c.extraction, "reason": why})
    return cards, problems


def _verified(thumbs: Path, key: str, info: dict, views) -> bool:
    """True when every picture of a card exists with the size its JSON recorded (verified before reuse)."""
    try:
        return all((thumbs / f"{key}_{v}.png").stat().st_size == info["views"][v]["bytes"] for v in views)
    except (OSError, KeyError, TypeError):
        return False


def _render(cards: list[Card], layout: Layout, settings: QcSettings, executor) -> tuple[int, dict[str, str]]:
    """Render the cards whose thumbnails are missing (grouped per image); returns (rendered, errors by key)."""
    from ..executors import Executor, get_executor

    thumbs = layout.qc / THUMBS
    todo: dict[str, dict] = {}
    for c in cards:
        if not c.key:
            continue
        meta = thumbs / f"{c.key}.json"
        if meta.is_file():
            try:
                info = json.loads(meta.read_text())
            except ValueError:
                info = {}
            if _verified(thumbs, c.key, info, c.views):
                c.info, c.cached = info, True
                continue
        item = todo.setdefault(c.image_path, {
            "image": str(layout.dataset / c.image_path), "modality": c.modality, "thumbs": str(thumbs),
            "settings": settings.render_settings(), "image_key": None, "masks": []})
        if c.kind == "mask":
            item["masks"].append({"key": c.key, "path": str(layout.dataset / c.path), "colour": list(roi_colour(c.roi))})
        else:
            item["image_key"] = c.key
    errors: dict[str, str] = {}
    if not todo:
        return 0, errors
    by_key = {c.key: c for c in cards if c.key}
    own = not isinstance(executor, Executor)
    ex = get_executor(executor or "local") if own else executor
    if own and len(todo) < 2 * max(1, ex.workers) and ex.name == "local":
        ex.close()
        ex = get_executor("serial")  # a few images: not worth starting worker processes
    n = 0

    def rel(msg: str) -> str:  # reasons name files relative to the dataset, never by an absolute path
        return msg.replace(f"{layout.dataset.as_posix()}/", "").replace(str(layout.qc), QC_DIR)

    try:
        for oc in ex.map_unordered(render_item, list(todo.items())):
            item = todo[oc.key]
            keys = [mk["key"] for mk in item["masks"]] + ([item["image_key"]] if item["image_key"] else [])
            if not oc.ok:
                errors.update({k: rel(oc.error or "rendering failed") for k in keys})
                continue
            for k, info in oc.value.items():
                if "error" in info:
                    errors[k] = rel(info["error"])
                else:
                    by_key[k].info = info
                    n += 1
    finally:
        if own:
            ex.close()
    return n, errors


def robust_z(values: list[float]) -> list[float | None]:
    """(x - median) / (1.4826 * MAD) of each value (None where the MAD is 0 or fewer than 5 values)."""
    import numpy as np

    x = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    ok = np.isfinite(x)
    if ok.sum() < 5:
        return [None] * len(values)
    med = float(np.median(x[ok]))
    mad = 1.4826 * float(np.median(np.abs(x[ok] - med)))
    if mad <= 1e-12:
        return [None] * len(values)
    return [None if not np.isfinite(v) else float((v - med) / mad) for v in x]


def _metrics(cards: list[Card], layout: Layout, settings: QcSettings) -> list[str]:
    """Fill ``card.values`` (ROI volume, mean intensity, chosen features) and mark robust-z outliers."""
    wide = None
    if layout.features is not None and (layout.features / "features_wide.parquet").is_file():
        from ..features.naming import read_wide

        wide = read_wide(layout.features)
    feats = [f for f in settings.features if wide is not None and f in wide.columns]
    lookup: dict[tuple, dict] = {}
    if wide is not None and feats:
        for rec in wide[["patient_id", "series_uid", "roi", *feats]].to_dict("records"):
            lookup[(str(rec["patient_id"]), str(rec["series_uid"]), str(rec["roi"]))] = rec
    metrics = ["volume_ml", "mean_intensity", *feats]
    masks = [c for c in cards if c.kind == "mask"]
    for c in masks:
        c.values["volume_ml"] = c.volume_ml
        c.values["mean_intensity"] = _f(c.info.get("roi_mean"))
        rec = lookup.get((c.patient_id, c.image_series, c.roi))  # the wide table names the image series
        for f in feats:
            c.values[f] = _f(rec.get(f)) if rec else None
    groups: dict[tuple, list[Card]] = {}
    for c in masks:
        groups.setdefault((c.modality, c.centre), []).append(c)
    for (_, _), members in groups.items():
        for metric in metrics:
            for c, z in zip(members, robust_z([c.values.get(metric) for c in members])):
                if z is not None and abs(z) > settings.outlier_z:
                    c.outliers.append(f"{metric} (z={z:+.1f})")
    for c in masks:
        if c.outliers and "outlier" not in c.flags:
            c.flags.append("outlier")
    return metrics


def kruskal_columns(X, groups) -> "np.ndarray":  # noqa: F821
    """Kruskal-Wallis p-value of each column of ``X`` (n x p) across ``groups`` (n integer codes).

    The H statistic on average ranks with the tie correction, chi-square with k - 1 degrees of
    freedom (as :func:`scipy.stats.kruskal`, vectorised over columns); NaN where a column is constant.
    """
    import numpy as np
    import pandas as pd
    from scipy.special import chdtrc

    X = np.asarray(X, dtype=float)
    g = np.asarray(groups)
    n = X.shape[0]
    ranks = pd.DataFrame(X).rank(axis=0, method="average").to_numpy()
    ks = np.unique(g)
    h = sum((ranks[g == k].sum(axis=0) ** 2) / (g == k).sum() for k in ks)
    h = 12.0 / (n * (n + 1)) * h - 3.0 * (n + 1)
    ties = np.array([float(((t := np.unique(col, return_counts=True)[1]) ** 3 - t).sum()) for col in X.T])
    corr = 1.0 - ties / (n ** 3 - n)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(corr > 0, h / corr, np.nan)
    return chdtrc(len(ks) - 1, h)


def centre_effect(layout: Layout, alpha: float) -> dict:
    """Per feature family, the share of features that differ between centres (Kruskal-Wallis p < ``alpha``),
    before and after ComBat (fitted on all patients: a descriptive check, not a model)."""
    if layout.analysis is None:
        return {"available": False, "reason": "no analysis table (run the pipeline with clinical data)"}
    import numpy as np
    import pandas as pd

    from ..features.naming import FeatureName

    df = pd.read_parquet(layout.analysis)
    if "centre" not in df.columns:
        return {"available": False, "reason": "the analysis table has no centre column"}
    centres = df["centre"].astype(str)
    if centres.nunique() < 2:
        return {"available": False, "reason": "fewer than two centres"}
    names = {c: FeatureName.parse(c) for c in df.columns}
    cols = [c for c, n in names.items() if n is not None and pd.api.types.is_numeric_dtype(df[c])]
    X = df[cols].astype(float)
    X = X.loc[:, X.notna().mean() > 0.9]
    X = X.fillna(X.median())
    X = X.loc[:, X.std() > 1e-9]
    if X.shape[1] == 0:
        return {"available": False, "reason": "no numeric feature column"}
    labels = sorted(centres.unique())
    codes = centres.map({g: i for i, g in enumerate(labels)}).to_numpy()

    def significant(frame: pd.DataFrame) -> dict[str, bool]:
        p = kruskal_columns(frame.to_numpy(dtype=float), codes)
        return {c: bool(np.isfinite(v) and v < alpha) for c, v in zip(frame.columns, p)}

    before = significant(X)
    after: dict[str, bool] | None = None
    reason = ""
    try:
        from ..modeling.transformers import ComBatHarmonizer

        harm = ComBatHarmonizer("centre").fit_transform(pd.concat([X, centres.rename("centre")], axis=1))
        after = significant(pd.DataFrame(np.asarray(harm, dtype=float), columns=X.columns))
    except Exception as err:  # noqa: BLE001 - the panel says why there is no "after"
        reason = f"ComBat not applicable: {type(err).__name__}: {err}"
    fams: dict[str, list[str]] = {}
    for c in X.columns:
        n = names[c]
        fams.setdefault(f"{n.modality + ' ' if n.modality else ''}{n.feature_class}", []).append(c)
    rows = [{"family": fam, "features": len(cs), "before": sum(before[c] for c in cs) / len(cs),
             "after": (sum(after[c] for c in cs) / len(cs)) if after is not None else None}
            for fam, cs in sorted(fams.items())]
    return {"available": True, "alpha": alpha, "centres": labels, "patients": int(len(df)), "families": rows,
            "reason": reason}


def _mlflow(layout: Layout, settings: QcSettings, tracking_uri: str | None) -> dict:
    """Runs to link (pipeline run, experiments and their child runs) and their plots copied into ``assets/``."""
    res: dict[str, Any] = {"pipeline_run": None, "experiments": [], "error": ""}
    if layout.run_report is not None:
        try:
            res["pipeline_run"] = json.loads(layout.run_report.read_text()).get("mlflow_run_id")
        except ValueError:
            pass
    exps = []
    if layout.experiments is not None:
        try:
            exps = json.loads(layout.experiments.read_text())
        except ValueError:
            exps = []
    runs = [res["pipeline_run"]] if res["pipeline_run"] else []
    for e in exps:
        runs += [e.get("run_id")] + [r.get("run_id") for r in e.get("leaderboard", [])]
    runs = [r for r in runs if r]
    if not runs:
        return res
    assets = layout.qc / ASSETS
    index = assets / "runs.json"
    try:
        known = json.loads(index.read_text()) if index.is_file() else {}
    except ValueError:
        known = {}
    missing = [r for r in runs if r not in known]
    if missing:
        try:
            known.update(_fetch_runs(missing, assets, tracking_uri))
            write_json(index, known)
        except Exception as err:  # noqa: BLE001 - the report is still useful without MLflow
            res["error"] = f"MLflow store not readable: {type(err).__name__}: {err}"
    from ..tracking.store import ui_url

    base = settings.mlflow_ui

    def link(run_id: str | None) -> dict:
        k = known.get(run_id or "", {})
        exp = k.get("experiment_id")
        url = ui_url(base, exp, run_id) if exp else ""
        return {"run_id": run_id, "url": url, "plots": k.get("plots", []), "name": k.get("name", "")}

    if res["pipeline_run"]:
        res["pipeline_run"] = link(res["pipeline_run"])
    for e in exps:
        parent = link(e.get("run_id"))
        exp_id = known.get(e.get("run_id") or "", {}).get("experiment_id")
        res["experiments"].append({
            "name": e.get("name", ""), "run": parent, "best": e.get("best"),
            "experiment_url": ui_url(base, exp_id, view=known.get(e.get("run_id") or "", {}).get("view")) if exp_id
            else "",
            "leaderboard": [{**r, **{"link": link(r.get("run_id"))}} for r in e.get("leaderboard", [])]})
    return res


def _fetch_runs(run_ids: list[str], assets: Path, tracking_uri: str | None) -> dict:
    """Experiment id, name and plots (``plots/*.png``, re-encoded) of each run, from the MLflow store."""
    import tempfile

    from ..io import write_bytes
    from ..tracking import client
    from ..tracking.store import RUNS_VIEW
    from .render import reencode_png

    c = client(tracking_uri)
    out = {}
    for rid in run_ids:
        run = c.get_run(rid)
        plots = []
        try:
            arts = [a.path for a in c.list_artifacts(rid, "plots") if a.path.lower().endswith(".png")]
        except Exception:  # noqa: BLE001 - no artifact store: links only
            arts = []
        for a in arts:
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(c.download_artifacts(rid, a, tmp))
                name = f"{rid}_{Path(a).stem}.png"
                write_bytes(assets / name, reencode_png(local.read_bytes()))
                plots.append({"file": f"{ASSETS}/{name}", "title": Path(a).stem})
        tags = c.get_experiment(run.info.experiment_id).tags or {}
        view = RUNS_VIEW if any(k.endswith(f".{RUNS_VIEW}") for k in tags) else None  # see share_runs_view
        out[rid] = {"experiment_id": run.info.experiment_id, "name": run.info.run_name or "", "plots": plots,
                    "view": view}
    return out


def _prune(thumbs: Path, keep: set[str]) -> int:
    """Remove thumbnails no card uses any more (a changed mask leaves its old pictures behind)."""
    n = 0
    if not thumbs.is_dir():
        return n
    for p in thumbs.iterdir():
        key = p.name.split("_", 1)[0].split(".", 1)[0]
        if key not in keep:
            p.unlink(missing_ok=True)
            n += 1
    return n


def run_qc(out: "str | Path | Layout", features: str | Path | None = None, clinical: str | Path | None = None,
           settings: QcSettings | None = None, executor=None, tracking_uri: str | None = None,
           title: str | None = None) -> RunReport:
    """Write ``OUT/qc/index.html`` (see the module docstring); returns the report of its cards.

    Args:
        out: a pipeline OUT or an ingest OUT (or the :class:`Layout` of the inputs, e.g. the pipeline's stage).
        features: a FEATURES folder (default: ``OUT/features`` of a pipeline OUT).
        clinical: a clinical table with ``patient_id`` and ``centre`` (default: the pipeline's).
        settings: display and cohort-view settings (:class:`QcSettings`).
        executor: executor spec or :class:`~biomarkers.executors.Executor` the thumbnails render on
            (default ``local``; an instance is not closed).
        tracking_uri: MLflow store of the runs in ``experiments.json`` / ``run_report.json``.
    """
    from . import html

    t0 = time.time()
    settings = settings or QcSettings()
    layout = out if isinstance(out, Layout) else Layout.find(out, features, clinical)
    rep = RunReport("qc")
    cards, problems = collect(layout, settings)
    rendered, errors = _render(cards, layout, settings, executor)
    metrics = _metrics(cards, layout, settings)
    effect = centre_effect(layout, settings.alpha)
    ml = _mlflow(layout, settings, tracking_uri)
    for c in cards:
        case = f"qc/{c.path or c.patient_id + '/' + c.modality + '/' + c.roi}"
        if c.key and c.key in errors:
            c.info = {"error": errors[c.key]}
            rep.add(case, CaseStatus.FAILED, f"thumbnails not rendered: {errors[c.key]}")
            problems.append({"stage": "qc", "case": c.path, "status": "failed",
                             "reason": f"thumbnails not rendered: {errors[c.key]}"})
        elif c.key:
            rep.add(case, CaseStatus.DONE, "", cached=c.cached)
        else:
            rep.add(case, CaseStatus.SKIPPED, f"nothing to show: {c.kind} {c.status}"
                    + (f" ({c.reason})" if c.reason else ""))
    page = html.page(cards, problems, metrics, effect, ml, settings, title or "Quality control",
                     generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    write_text(layout.qc / INDEX, page)
    pruned = _prune(layout.qc / THUMBS, {c.key for c in cards if c.key})
    rep.extra.update({"rendered": rendered, "reused": sum(c.cached for c in cards), "pruned": pruned,
                      "cards": len(cards), "index": f"{QC_DIR}/{INDEX}", "seconds": round(time.time() - t0, 3)})
    rep.write(layout.qc / "report.json")
    echo(f"[qc] {len(cards)} cards ({rendered} rendered, {rep.extra['reused']} reused): {layout.qc / INDEX}")
    return rep
