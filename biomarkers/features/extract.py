"""The extract stage: every (patient, image series, ROI) of an ingest output -> radiomic features.

Usage::

    report = run_extract("DATASET", {"CT": "configs/radiomics/ct.yaml", "PT": "configs/radiomics/pet.yaml"},
                         "FEATURES", executor="local")

or, step by step (validate / plan / run, so a dry run is ``plan()`` alone)::

    stage = Extract("DATASET", "configs/radiomics/ct.yaml", "FEATURES")
    stage.validate()
    plan = stage.plan()          # which items are cached, which are extracted, which are skipped and why
    report = stage.run(plan)

Output folder ``FEATURES``::

    items/<item_key>.parquet   one file per item, written atomically by the worker as it finishes
    features_long.parquet      one row per feature (columns: naming.LONG_COLUMNS + naming.PROVENANCE_COLUMNS)
    features_wide.parquet      one row per patient x series x ROI, one column per feature
                               (``<image_type>_<feature_class>_<feature>``, pyradiomics values)
    provenance.json            parameter files (content and hashes), library versions, per-item hashes
    report.json                the run report (every item done / skipped / failed with its reason)

Incremental: an item's key hashes the case identity, the image and mask file contents,
the parameter content and the library versions (:func:`biomarkers.features.items.item_key`).
Items whose file exists are not recomputed; the tables are assembled from the items of the
current plan only (item files of earlier plans stay on disk but are not included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..executors import Executor, get_executor
from ..io import FileHasher, write_json
from ..logs import echo, progress
from ..manifest import Manifest, read_manifest
from ..report import RunReport
from .items import Item, extract_item, item_key, library_versions
from .naming import KEY_COLUMNS, LONG_TABLE, WIDE_TABLE
from .params import ParamsByModality, ParamsSpec, parse_params

__all__ = ["Extract", "ExtractPlan", "run_extract", "LONG_TABLE", "WIDE_TABLE"]

STAGE = "extract"
ITEMS_DIR = "items"
PROVENANCE = "provenance.json"
REPORT = "report.json"
HASH_CACHE = ".file_hashes.json"


@dataclass
class PlannedCase:
    """A case that will not be extracted (skipped or failed already while planning)."""

    case: str
    status: str  # skipped | failed
    reason: str


@dataclass
class ExtractPlan:
    """What a run will do. ``items`` = cached + todo, in a stable order."""

    items: list[Item] = field(default_factory=list)
    todo: list[Item] = field(default_factory=list)
    cached: list[Item] = field(default_factory=list)
    problems: list[PlannedCase] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)
    sources: dict = field(default_factory=dict)  # item key -> relative image/mask paths and manifest hashes

    def summary(self) -> str:
        return (
            f"extract plan: {len(self.items)} items ({len(self.todo)} to extract, {len(self.cached)} cached), "
            f"{sum(p.status == 'skipped' for p in self.problems)} skipped, "
            f"{sum(p.status == 'failed' for p in self.problems)} failed, {len(self.stale)} stale item files ignored"
        )

    def lines(self) -> list[str]:
        out = [self.summary()]
        for it in self.items:
            out.append(f"  {'cached ' if it in self.cached else 'extract'}  {it.case}  [{it.key}]")
        for p in self.problems:
            out.append(f"  {p.status:7s}  {p.case}: {p.reason}")
        return out


def _s(v: Any) -> str:
    """A manifest cell as text ('' for None and NaN)."""
    return "" if v is None or (isinstance(v, float) and v != v) else str(v)


def _cost(voxel_count: Any, mask: Path) -> float:
    """Relative cost of an item: the ROI voxel count of the manifest, else the mask file's size."""
    try:
        v = float(voxel_count)
        if v == v and v > 0:
            return v
    except (TypeError, ValueError):
        pass
    try:
        return float(mask.stat().st_size)
    except OSError:
        return 0.0


def _item_complete(key: str):
    """Check of an item file without integrity record (written by an interrupted run): it reads
    as Parquet and every row is of item ``key``."""
    def check(path: Path) -> bool:
        import pyarrow.parquet as pq

        t = pq.read_table(path, columns=["item_key"])
        return t.num_rows > 0 and set(t["item_key"].to_pylist()) == {key}

    return check


def _volumes(image_row, ps) -> list[tuple[int | None, str]]:
    """The volumes of a mask's image to extract, from the parameter file's ``volumes:``
    (``first``, ``all``, indices) and the image row's ``volumes``: ``(volume, "")`` per item
    (volume None: a 3-D image, items and rows as without volumes), ``(volume, reason)`` when
    a selected volume is not in the image."""
    n = int(image_row.volumes or 1) if image_row is not None else 1
    sel = ps.volumes
    wanted = [0] if sel == "first" else list(range(n)) if sel == "all" else list(sel)
    if n == 1 and wanted == [0]:
        return [(None, "")]
    return [(v, "" if v < n else f"volume {v} selected by {ps.name} (volumes: {sel}) is not in the image "
             f"({n} volume{'s' if n != 1 else ''})") for v in wanted]


class Extract:
    """The extract stage (validate / plan / run).

    Args:
        dataset: an ingest output folder (``manifest.parquet``; paths in it relative to the folder).
        params: parameter file(s): a path, ``"MODALITY=path"`` strings, or a mapping modality -> path.
        out: the FEATURES folder.
        executor: executor spec (``local``, ``local:N``, ``serial``, ``dask://host:port``) or an Executor.
    """

    def __init__(self, dataset: str | Path, params: ParamsSpec | ParamsByModality, out: str | Path,
                 executor: str | Executor = "local"):
        self.dataset = Path(dataset)
        self.out = Path(out)
        self.executor = executor
        self._params_spec = params
        self.params: ParamsByModality | None = params if isinstance(params, ParamsByModality) else None
        self._manifest = None

    # ------------------------------------------------------------------ validate
    def validate(self) -> "Extract":
        """Load the manifest and the parameter files (pyradiomics' schema); raise on errors."""
        from ..integrity import Ledger
        from ..manifest import MANIFEST_FILE

        if self.params is None:
            self.params = parse_params(self._params_spec)
        self._inputs = Ledger(self.dataset)  # the ingest output's records: what is read is verified
        if self._inputs.present and (problem := self._inputs.verify(MANIFEST_FILE)) is not None:
            raise InputError(f"{self.dataset}: {problem}; rerun 'biomarkers ingest' to rewrite it")
        self._manifest = read_manifest(self.dataset)
        m = self._manifest
        missing = [c for c in ("kind", "patient_id", "modality", "roi", "path", "image_path") if c not in m.columns]
        if missing:
            raise InputError(f"{self.dataset / 'manifest.parquet'}: missing column(s) {missing}")
        return self

    # ------------------------------------------------------------------ plan
    def plan(self, dry_run: bool = False) -> ExtractPlan:
        """Decide per mask row: extract, cached (item file exists), skipped or failed (with reason).

        With ``dry_run`` nothing is written (not even the file-hash cache).
        """
        if self._manifest is None or self.params is None:
            self.validate()
        m = self._manifest
        assert self.params is not None
        versions = {False: library_versions(False)}
        items_dir = self.out / ITEMS_DIR
        cache = FileHasher(self.out / HASH_CACHE)
        plan = ExtractPlan()
        seen: set[str] = set()
        manifest = Manifest.from_records(m.to_dict("records"))
        masks = m[m["kind"] == "mask"].copy()
        for col in KEY_COLUMNS:
            if col not in masks.columns:
                masks[col] = ""
        if "status" in m.columns:  # hash every input at once (threads), then answer from the cache
            ok = m[m["status"].fillna("converted").astype(str).isin(["converted", ""])]
        else:
            ok = m
        inputs = self._inputs if self._inputs.present else None  # an older dataset: hashes from the cache
        if inputs is None:
            cache.prefetch([self.dataset / _s(x) for x in ok["path"] if _s(x)])
        for _, r in masks.iterrows():
            img_row = manifest.image_of(r)  # the mask row's explicit image reference (series + stack)
            img_rel = img_row.path if img_row is not None else _s(r.get("image_path"))
            patient = _s(r["patient_id"])
            modality = _s(r["modality"])
            roi = _s(r["roi"])
            series = img_row.series_uid if img_row is not None else _s(r.get("source_series_uid"))
            study = img_row.study_uid if img_row is not None else _s(r.get("study_uid"))
            ps = self.params.for_modality(modality)
            case = f"{patient}/{modality}/{series}/{roi}" + (f"/{ps.name}" if ps else "")
            status = _s(r.get("status")) or "converted"
            if status != "converted":
                plan.problems.append(PlannedCase(case, "skipped", f"mask not converted at ingest ({status}): {_s(r.get('reason'))}"))
                continue
            if ps is None:
                plan.problems.append(PlannedCase(case, "skipped", f"no parameter file for modality {modality} "
                                                 f"(given: {self.params.describe()})"))
                continue
            img_abs = self.dataset / img_rel
            mask_abs = self.dataset / _s(r["path"])
            problem = inputs and img_rel and (inputs.verify(img_rel) or inputs.verify(_s(r["path"])))
            if problem:  # against the records written at ingest (missing, truncated, changed since written)
                plan.problems.append(PlannedCase(case, "failed", f"{problem}; rerun 'biomarkers ingest' to reconvert it"))
                continue
            if not img_rel or not img_abs.is_file():
                plan.problems.append(PlannedCase(case, "failed", f"image file not found: {img_rel or '(no image_path)'}"))
                continue
            if not mask_abs.is_file():
                plan.problems.append(PlannedCase(case, "failed", f"mask file not found: {_s(r['path'])}"))
                continue
            if inputs is not None:  # the file hashes recorded at ingest (the files were verified above)
                ih, mh = inputs.files[img_rel].sha256, inputs.files[_s(r["path"])].sha256
            else:
                ih, mh = cache.file(img_abs), cache.file(mask_abs)
            with_ibsi = ps.ibsi is not None
            if with_ibsi not in versions:
                versions[with_ibsi] = library_versions(True)
            for volume, why in _volumes(img_row, ps):
                if why:
                    plan.problems.append(PlannedCase(f"{case}/volume-{volume}", "skipped", why))
                    continue
                ident = {"patient_id": patient, "study_uid": study, "series_uid": series, "modality": modality, "roi": roi}
                if volume is not None:
                    ident["volume"] = volume  # 3-D items keep the keys they always had
                key = item_key(ident, ih, mh, ps.param_hash, versions[with_ibsi])
                settings = ps.settings
                tol = settings.get("geometryTolerance")
                it = Item(
                    key=key, patient_id=patient, study_uid=study, series_uid=series, modality=modality, roi=roi,
                    image_path=str(img_abs.resolve()), mask_path=str(mask_abs.resolve()), params_name=ps.name,
                    params=ps.params, params_hash=ps.param_hash, image_hash=ih, mask_hash=mh,
                    out_path=str((items_dir / f"{key}.parquet").resolve()),
                    geometry_tolerance_mm=float(tol) if tol else 1e-3,
                    details={"cost": _cost(r.get("voxel_count"), mask_abs)}, volume=volume,
                )
                plan.sources[key] = {
                    "case": it.case,
                    "image": img_rel,
                    "mask": _s(r["path"]),
                    "image_sha256": ih,
                    "mask_sha256": mh,
                    "image_content_hash": img_row.content_hash if img_row is not None else "",
                    "mask_content_hash": _s(r.get("content_hash")),
                    "params": ps.name,
                }
                if key in seen:
                    plan.problems.append(PlannedCase(it.case, "skipped", f"duplicate of item {key} (same case listed twice)"))
                    continue
                seen.add(key)
                plan.items.append(it)
        plan.items.sort(key=lambda i: (i.patient_id, i.modality, i.series_uid, i.roi, i.params_name, i.volume or 0))
        ledger = self.ledger
        for it in plan.items:
            rel = f"{ITEMS_DIR}/{it.key}.parquet"
            ok = Path(it.out_path).is_file() and ledger.reusable(rel, "recomputing the item", adopt=_item_complete(it.key))
            if not ok and ledger.get(rel) is not None and not dry_run:
                Path(it.out_path).unlink(missing_ok=True)  # damaged: never read
                ledger.forget(rel)
            (plan.cached if ok else plan.todo).append(it)
        # largest ROIs first (longest-processing-time-first scheduling): the workers finish together
        plan.todo.sort(key=lambda i: -float(i.details.get("cost", 0)))
        keys = {it.key for it in plan.items}
        if items_dir.is_dir():
            plan.stale = sorted(p for p in items_dir.glob("*.parquet") if p.stem not in keys)
        if not dry_run:
            self.out.mkdir(parents=True, exist_ok=True)
            cache.save()
        return plan

    @property
    def ledger(self):
        """The integrity records of FEATURES (:class:`biomarkers.integrity.Ledger`)."""
        if getattr(self, "_ledger", None) is None:
            from ..integrity import Ledger

            self._ledger = Ledger(self.out)
        return self._ledger

    # ------------------------------------------------------------------ run
    def run(self, plan: ExtractPlan | None = None) -> RunReport:
        """Extract what the plan says and write the tables (FEATURES locked meanwhile)."""
        self.out.mkdir(parents=True, exist_ok=True)
        with self.ledger.writing("biomarkers extract"):
            return self._run(plan)

    def _run(self, plan: ExtractPlan | None) -> RunReport:
        from .naming import LONG_TABLE
        from .tables import write_tables

        plan = plan or self.plan()
        report = RunReport(STAGE)
        for it in plan.cached:
            report.add(it.case, "done", cached=True, item_key=it.key)
        for p in plan.problems:
            report.add(p.case, p.status, p.reason)  # type: ignore[arg-type]
        by_key = {it.key: it for it in plan.todo}
        own = not isinstance(self.executor, Executor)
        ex = get_executor(self.executor) if own else self.executor
        report.extra["executor"] = ex.describe()
        try:
            with progress("extract", len(plan.todo)) as advance:
                for o in ex.map_unordered(extract_item, [(it.key, it) for it in plan.todo]):
                    it = by_key[o.key]
                    if o.ok:
                        report.add(it.case, "done", item_key=it.key, **(o.value or {}))
                        self.ledger.add(f"{ITEMS_DIR}/{it.key}.parquet")
                        self.ledger.save(every_s=5.0)
                    else:
                        report.add(it.case, "failed", o.error or "unknown error", item_key=it.key)
                    advance()
        finally:
            if own:
                ex.close()
        present = [it for it in plan.items if self.ledger.get(f"{ITEMS_DIR}/{it.key}.parquet") is not None]
        keep = {f"{ITEMS_DIR}/{it.key}.parquet" for it in plan.items}
        for rel in [r for r in self.ledger.files if r.startswith(f"{ITEMS_DIR}/") and r not in keep]:
            self.ledger.forget(rel)  # item files of earlier plans: on disk, no longer read or checked
        reuse = self.ledger.reusable(LONG_TABLE, "rebuilding it from the item files")
        tables = write_tables(self.out, present, reuse_previous=reuse)
        for rel in (LONG_TABLE, WIDE_TABLE):
            self.ledger.add(rel)
        prov = {
            "stage": STAGE,
            "dataset": os.path.basename(os.path.abspath(self.dataset)),
            "versions": library_versions(any(ps.ibsi is not None for ps in (self.params.all() if self.params else []))),
            "params": [
                {"modality": ps.modality, "name": ps.name, "path": os.path.basename(str(ps.path)),  # no site folders
                 "param_hash": ps.param_hash,
                 "file_sha256": ps.file_hash, "params": ps.params}
                for ps in (self.params.all() if self.params else [])
            ],
            "items": {it.key: plan.sources.get(it.key, {}) for it in present},
        }
        write_json(self.out / PROVENANCE, prov)
        self.ledger.add(PROVENANCE)
        report.extra.update(
            {
                "items": len(plan.items),
                "stale_item_files": len(plan.stale),
                "tables": tables,
                "computed_keys": sorted(r.details.get("item_key", "") for r in report.cases
                                        if r.status == "done" and not r.cached),
            }
        )
        report.write(self.out / REPORT)
        self.ledger.add(REPORT)
        return report


def run_extract(dataset: str | Path, params: ParamsSpec, out: str | Path, executor: str | Executor = "local") -> RunReport:
    """Extract features for every ROI of an ingest output; see the module docstring."""
    from ..locks import output_lock

    stage = Extract(dataset, params, out, executor)
    stage.validate()
    with output_lock(out, "biomarkers extract"):  # plan and run: one holder
        plan = stage.plan()
        echo(plan.summary())
        report = stage.run(plan)
    echo(report.summary())
    return report
