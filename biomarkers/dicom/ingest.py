"""``biomarkers ingest SRC OUT``: index, qualify and convert DICOM series to NIfTI.

Stage API (validate / plan / run)::

    ing = Ingest("dicom/", "dataset/", IngestSettings())
    ing.validate()            # inputs, secret, settings
    plan = ing.plan()         # index + qualify + what is cached (a dry run stops here)
    report = ing.run(plan)    # converts (per stack, through the executor), masks, manifest

Output folder (``OUT``)::

    manifest.parquet, manifest.csv     one row per image stack / mask (biomarkers.manifest.COLUMNS)
    report.json                        counts, problems by reason, unused input files
    images/<patient>/<MODALITY>_<series_tag>.nii.gz (+ .json sidecar)
    masks/<patient>/<MODALITY>_<series_tag>__<roi>.nii.gz

``<series_tag>`` is the first 12 digits after the root of the pseudonymised
series UID, plus ``_s2``, ``_s3``... for further stacks of a series. Every
identifier written goes through :class:`biomarkers.deid.Deidentifier` unless
de-identification is explicitly disabled (recorded in report.json).

Reruns are incremental: a stack whose input files (SOP instance, size, mtime),
settings and pseudonyms hash to the ``input_hash`` of an existing sidecar is not
converted again; an interrupted run resumes from the sidecars already written.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..executors import Executor, get_executor
from ..io import sha256_json
from ..manifest import COLUMNS
from ..report import RunReport
from .convert import CONVERTER_VERSION, convert_masks, convert_stack, image_row, warm_up
from .index import IndexResult, build_stacks
from .model import ImageStack, SegmentationObject
from .qualify import qc_flags, qualify
from .settings import IngestSettings, MaskSettings

log = logging.getLogger(__name__)

__all__ = ["Ingest", "IngestPlan", "IngestSettings", "MaskSettings", "run_ingest"]

STATUS_TO_CASE = {"converted": "done", "skipped": "skipped", "failed": "failed"}


@dataclass
class IngestPlan:
    """What a run will do (the result of :meth:`Ingest.plan`)."""

    index: IndexResult
    stacks: list[ImageStack]
    items: list[dict] = field(default_factory=list)  # one payload per stack to convert
    cached: list[dict] = field(default_factory=list)  # manifest rows reused as is
    rows: list[dict] = field(default_factory=list)  # rows decided at plan time (skipped...)
    payload_of: dict[str, dict] = field(default_factory=dict)  # stack key -> payload (all stacks)

    def summary(self) -> str:
        return (
            f"{self.index.n_files} files: {len(self.index.files)} image frames, "
            f"{len(self.index.segmentations)} segmentation objects, {len(self.index.unused)} not used; "
            f"{len(self.stacks)} image stacks: {len(self.items)} to convert, {len(self.cached)} up to date, "
            f"{len(self.rows)} skipped"
        )


def series_tag(uid: str, uid_root: str) -> str:
    """First 12 digits after ``uid_root`` of a (pseudonymised) UID (last 12 digits of a foreign UID)."""
    root = uid_root.rstrip(".") + "."
    if uid.startswith(root):
        digits = re.sub(r"\D", "", uid[len(root):])
        return digits[:12]
    digits = re.sub(r"\D", "", uid)
    return digits[-12:]


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", s or "") or "OT"


class Ingest:
    """Index, qualify and convert the DICOM files under ``src`` into the dataset folder ``out``.

    Args:
        src: folder of DICOM files (any names, nested; never modified).
        out: output folder (created).
        settings: :class:`IngestSettings` (defaults when None).
        deidentifier: a :class:`biomarkers.deid.Deidentifier`; default built from ``settings.deid``
            (reads the secret from ``BIOMARKERS_SECRET``).
        executor: an Executor or a spec (``local``, ``local:N``, ``serial``, ``dask://host:port``,
            or ``auto``: in this process for small jobs, else ``local``; see AUTO_SERIAL_MAX_BYTES).
    """

    def __init__(self, src, out, settings: IngestSettings | None = None, deidentifier=None, executor=None):
        self.src = Path(src)
        self.out = Path(out)
        self.settings = settings or IngestSettings()
        self._deid = deidentifier
        self._executor_spec = executor if executor is not None else "local"
        self.last_unused: list[dict] = []  # unused input files of the last run, with paths (not written)
        self.last_index: IndexResult | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def deidentifier(self):
        if self._deid is None:
            from ..deid import Deidentifier

            self._deid = Deidentifier(self.settings.deid)
        return self._deid

    #: ``executor="auto"``: convert in this process when the plan holds at most this many
    #: bytes of pixel data (a process pool's start-up, ~1 s of CPU per worker, would cost
    #: more than it saves), else on a local process pool with one worker per core.
    AUTO_SERIAL_MAX_BYTES = 128 * 2**20

    def _executor(self, plan: IngestPlan | None = None) -> tuple[Executor, bool]:
        spec = self._executor_spec
        if isinstance(spec, Executor):
            return spec, False
        if spec == "auto":
            if plan is None:
                return get_executor("serial"), True
            nbytes = sum(
                (f.rows or 0) * (f.columns or 0) * ((f.extra.get("bits_allocated") or 16) // 8)
                for p in plan.items
                for f in p["stack"].files
            )
            return get_executor("serial" if nbytes <= self.AUTO_SERIAL_MAX_BYTES else "local"), True
        return get_executor(spec), True

    # ------------------------------------------------------------------ validate
    def validate(self) -> None:
        """Check inputs before any work: SRC exists, OUT is not SRC, the secret is usable."""
        if not self.src.is_dir():
            raise InputError(f"{self.src}: source folder not found (or not a folder)")
        src, out = self.src.resolve(), self.out.resolve()
        if out == src:
            raise InputError(f"{self.out}: the output folder must differ from the source folder")
        if src in out.parents:
            log.info("output folder is inside the source folder; it is excluded from indexing")
        if out.exists() and not out.is_dir():
            raise InputError(f"{self.out}: exists and is not a folder")
        _ = self.deidentifier  # raises SecretError when the secret is missing
        self.index_cache_path()  # raises InputError for a cache inside OUT or SRC

    # ------------------------------------------------------------------ plan
    def plan(self, executor: Executor | None = None) -> IngestPlan:
        """Index SRC, qualify every stack and decide what to convert (nothing is written to OUT; the
        source-side index cache, if enabled, learns the headers it read)."""
        own = False
        if executor is None:
            executor, own = self._executor()
        try:
            exclude = self.out.resolve() if self.src.resolve() in self.out.resolve().parents else None
            idx = self._index(exclude, executor)
        finally:
            if own:
                executor.close()
        stacks = build_stacks(idx.files)
        plan = IngestPlan(index=idx, stacks=stacks)
        s = self.settings
        deid = self.deidentifier
        conv = s.conversion_dict()
        for st in stacks:
            qualify(st, s.allow_gaps, s.spacing_tolerance, s.position_tolerance_mm)
            payload = self._payload(st)
            plan.payload_of[st.key] = payload
            if st.status == "skipped":
                plan.rows.append(image_row(payload, st.grid, st.qc, qc_flags(st.qc), "", "skipped", st.reason))
                continue
            files = sorted((f.sop_instance_uid, f.extra.get("frame"), f.extra.get("size"), f.extra.get("mtime_ns")) for f in st.files)
            payload["input_hash"] = sha256_json(
                {"files": files, "settings": conv, "ids": payload["ids"], "path": payload["path"], "version": CONVERTER_VERSION}
            )
            cached = self._cached_row(payload)
            if cached is not None:
                st.status, st.out_path = "converted", payload["path"]
                plan.cached.append(cached)
            else:
                plan.items.append(payload)
        # unsupported objects: one row per series
        by_series: dict[tuple, list] = defaultdict(list)
        for f in idx.unsupported:
            by_series[(f.patient_id, f.study_uid, f.series_uid)].append(f)
        for (pid, study, series), fs in sorted(by_series.items()):
            if not pid:
                continue
            ids = {"patient_id": deid.patient_id(pid), "study_uid": deid.uid(study), "series_uid": deid.uid(series), "stack": ""}
            pseudo = ImageStack(series, pid, study, series, fs[0].modality, fs[0].frame_of_reference_uid, fs)
            payload = {"stack": pseudo, "ids": ids, "path": "", "input_hash": ""}
            plan.rows.append(image_row(payload, None, {}, [], "", "skipped", fs[0].extra.get("reason", "unsupported object")))
        return plan

    #: Up to this many files to read the main process indexes (fast header reads, ~0.2 ms a
    #: file) while the workers start; above, chunks of files are indexed by the executor.
    SERIAL_INDEX_MAX_FILES = 5000

    def index_cache_path(self) -> Path | None:
        """Where this source's header cache lives (``settings.index_cache``), or None when off."""
        from .index_cache import resolve_cache_path

        return resolve_cache_path(self.settings.index_cache, self.src, self.out)

    def _index(self, exclude, executor: Executor) -> IndexResult:
        from .index import list_files, merge, read_headers, split_cached
        from .index_cache import IndexCache

        cache_path = self.index_cache_path()
        cache = IndexCache(cache_path) if cache_path is not None else None
        try:
            todo, hits, present = split_cached(list_files(self.src, exclude), cache)
            n = len(todo)
            if n > self.SERIAL_INDEX_MAX_FILES or executor.name != "local" or n == 0:
                fresh = read_headers(todo, executor if n > self.SERIAL_INDEX_MAX_FILES else None)
            else:
                warm = threading.Thread(
                    target=lambda: list(executor.map_unordered(warm_up, [(f"warm-{i}", None) for i in range(executor.workers)])),
                    daemon=True,
                )
                warm.start()  # workers start and import while this process reads headers
                try:
                    fresh = read_headers(todo, None)
                finally:
                    warm.join()
            return merge(todo, fresh, hits, present, cache)
        finally:
            if cache is not None:
                cache.close()

    def _payload(self, st: ImageStack) -> dict:
        """Work-item payload of a stack: pseudonymised ids, output path, settings (no secret)."""
        deid = self.deidentifier
        if not st.patient_id:
            st.status, st.reason = "skipped", "missing PatientID"
        pid = deid.patient_id(st.patient_id) if st.patient_id else "UNKNOWN"
        series = deid.uid(st.series_uid)
        n = int(st.key.split("#", 1)[1]) if "#" in st.key else 1
        tag = series_tag(series, deid.settings.uid_root) + (f"_s{n}" if n > 1 else "")
        mod = _safe(st.modality)
        rel = f"images/{pid}/{mod}_{tag}.nii.gz"
        ids = {"patient_id": pid, "study_uid": deid.uid(st.study_uid), "series_uid": series, "stack": f"#{n}" if n > 1 else ""}
        return {
            "stack": st,
            "out": str(self.out),
            "path": rel,
            "tag": f"{mod}_{tag}",
            "ids": ids,
            "settings": {**self.settings.conversion_dict(), "compresslevel": self.settings.compresslevel},
            "deidentified": deid.enabled,
            "input_hash": "",
        }

    def _cached_row(self, payload: dict) -> dict | None:
        import json

        nii = self.out / payload["path"]
        side = nii.with_name(nii.name[: -len(".nii.gz")] + ".json")
        if not (nii.is_file() and side.is_file()):
            return None
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if meta.get("input_hash") != payload["input_hash"]:
            return None
        from ..geometry import Grid

        g = meta.get("geometry", {})
        grid = Grid(tuple(g["shape"]), tuple(g["spacing"]), tuple(g["origin_lps"]), tuple(tuple(r) for r in g["direction_lps"]))
        payload["stack"].grid = grid
        return image_row(payload, grid, meta.get("qc", {}), meta.get("qc_flags", []), meta.get("content_hash", ""), "converted", "")

    # ------------------------------------------------------------------ run
    def run(self, plan: IngestPlan | None = None) -> RunReport:
        """Convert what the plan says, then masks; write manifest and report.json."""
        from ..logs import progress

        self.validate()
        if plan is None and self._executor_spec == "auto":
            plan = self.plan()  # indexes in this process; the plan's size picks the executor
        executor, own = self._executor(plan)
        report = RunReport("ingest")
        try:
            if plan is None:
                plan = self.plan(executor)
            self.out.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(self.out)
            deid = self.deidentifier
            old_manifest = _read_old_manifest(self.out)
            for p in plan.items:
                p["deid"] = self.settings.deid.model_dump(mode="json")
            rows: list[dict] = list(plan.rows) + [dict(r, _cached=True) for r in plan.cached]
            by_key = {p["stack"].key: p for p in plan.items}
            log.info("%s; converting on %s", plan.summary(), executor.describe())
            with progress("Converting series", len(plan.items)) as advance:
                for oc in executor.map_unordered(convert_stack, [(p["stack"].key, p) for p in plan.items]):
                    p = by_key[oc.key]
                    st = p["stack"]
                    if oc.ok:
                        st.status, st.out_path = "converted", p["path"]
                        rows.append(oc.value)
                        log.debug("converted %s", p["path"])
                    else:
                        st.status, st.reason = "failed", _clean_error(oc.error)
                        rows.append(image_row(p, st.grid, st.qc, qc_flags(st.qc), "", "failed", st.reason))
                        log.warning("%s/%s: failed: %s", p["ids"]["patient_id"], p["tag"], st.reason)
                    advance()
            mask_rows = self._run_masks(plan, executor, old_manifest)
            rows += mask_rows + self._missing_roi_rows(plan, mask_rows)
        finally:
            if own:
                executor.close()
        self._write_manifest(rows)
        for r in rows:
            case = r["path"] or r.get("_case") or f"{r['patient_id']}/{r['modality'] or 'OT'}_{r['series_uid'][-12:]}" + (
                f"__{r['roi']}" if r["kind"] == "mask" and r.get("roi") else ""
            )
            report.add(
                case=case[:-7] if case.endswith(".nii.gz") else case,
                status=STATUS_TO_CASE[r["status"]],
                reason=r["reason"] if r["status"] != "converted" else "",
                cached=bool(r.get("_cached")),
                kind=r["kind"],
                qc_flags=r["qc_flags"],
            )
        idx = plan.index
        report.extra.update(
            {
                "deidentified": deid.enabled,
                "demo_secret": bool(getattr(deid.pseudonymizer, "demo", False)) if deid.enabled else False,
                "files": {
                    "indexed": idx.n_files,
                    "image_frames": len(idx.files),
                    "segmentation_objects": len(idx.segmentations),
                    "unsupported_objects": len(idx.unsupported),
                    "not_used": len(idx.unused),
                    "headers_from_cache": idx.n_cached,
                },
                "unused_files": self._unused_files_report(idx),
                "outputs": {
                    "images": sum(1 for r in rows if r["kind"] == "image" and r["status"] == "converted"),
                    "masks": sum(1 for r in rows if r["kind"] == "mask" and r["status"] == "converted"),
                },
                "settings": self.settings.model_dump(mode="json"),
                "executor": executor.describe(),
            }
        )
        report.write(self.out / "report.json")
        self.last_unused = self.unused_files(idx)  # for the printed report (paths stay on this machine)
        self.last_index = idx
        return report

    def unused_files(self, idx: IndexResult) -> list[dict]:
        """Every input file not used: ``path`` (relative to SRC), ``reason``, ``duplicate_of``.

        For the operator at the source site (printed by the CLI); never written to OUT
        when de-identification is on (see :meth:`_unused_files_report`).
        """
        out = [{"path": u.rel, "reason": u.reason, "duplicate_of": u.duplicate_of} for u in idx.unused]
        out += [{"path": f.rel, "reason": f.extra.get("reason", "unsupported object"), "duplicate_of": ""} for f in idx.unsupported]
        return sorted(out, key=lambda u: u["path"])

    def write_source_report(self, path: str | Path) -> Path:
        """Write the unused input files of the last run with their paths relative to SRC.

        For the operator at the source site: each entry has ``path``, ``reason``,
        ``duplicate_of`` and ``ref`` (the reference report.json uses for it). Written with
        owner-only permissions (0600); the CLI refuses a path inside OUT.
        """
        import json
        import os

        idx = self.last_index
        refs = self._unused_files_report(idx)
        rows = self.unused_files(idx)
        entries = [dict(r, ref=x.get("ref", "")) for r, x in zip(rows, refs)]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"src": str(Path(self.src).resolve()), "unused_files": entries}, fh, indent=2)
        os.replace(tmp, path)
        return path

    def _unused_files_report(self, idx: IndexResult) -> list[dict]:
        """``unused_files`` of report.json. Source paths often carry patient names or ids
        (hospital exports name folders after patients), so with de-identification on each
        file is given by a keyed reference (``ref``, stable across runs with the same
        secret) instead of its path; the paths are printed, not stored."""
        rows = self.unused_files(idx)
        deid = self.deidentifier
        if not deid.enabled:
            return rows
        def ref(rel: str) -> str:
            return "file-" + series_tag(deid.uid("file:" + rel), deid.settings.uid_root) if rel else ""

        return [{"ref": ref(r["path"]), "reason": r["reason"], "duplicate_of": ref(r["duplicate_of"])} for r in rows]

    # ------------------------------------------------------------------ masks
    def _run_masks(self, plan: IngestPlan, executor: Executor, old: list[dict] | None) -> list[dict]:
        s = self.settings
        deid = self.deidentifier
        converted = [st for st in plan.stacks if st.status == "converted" and st.grid is not None]
        by_patient: dict[str, list[ImageStack]] = defaultdict(list)
        for st in converted:
            by_patient[st.patient_id].append(st)
        masks_cfg = s.masks.model_dump(mode="json")
        items: list[tuple[str, dict]] = []
        rows: list[dict] = []

        def image_info(sts: list[ImageStack]) -> dict:
            out = {}
            for st in sts:
                p = plan.payload_of[st.key]
                out[st.key] = {"path": p["path"], "tag": p["tag"], "ids": p["ids"], "modality": st.modality, "input_hash": p["input_hash"]}
            return out

        def queue(key: str, payload: dict) -> None:
            """Reuse the manifest rows of an unchanged object, else queue it for conversion."""
            reuse = _reusable(old, payload["input_hash"], self.out)
            if reuse is not None:
                rows.extend(dict(r, _cached=True) for r in reuse)
            else:
                items.append((key, payload))

        segs: list[SegmentationObject] = sorted(plan.index.segmentations, key=lambda o: o.rel)
        for n, obj in enumerate(segs):
            cands = by_patient.get(obj.patient_id, [])
            info = image_info(cands)
            try:
                stat = obj.path.stat()
                fid = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                fid = None
            seg_series = deid.uid(obj.series_uid)
            h = sha256_json({"seg": [obj.series_uid, obj.rel.rsplit("/", 1)[-1], fid], "images": sorted(v["input_hash"] for v in info.values()),
                             "masks": masks_cfg, "deid": deid.enabled, "version": CONVERTER_VERSION})
            payload = {
                "kind": "object",
                "object": obj,
                "stacks": cands,
                "images": info,
                "settings": s.masks,
                "out": str(self.out),
                "patient_id": deid.patient_id(obj.patient_id) if obj.patient_id else "UNKNOWN",
                "study_uid": deid.uid(obj.study_uid),
                "series_uid": seg_series,
                "input_hash": h,
                "compresslevel": s.compresslevel,
            }
            queue(f"seg-{n}", payload)
        if s.masks.nifti_pattern:
            from .masks import find_nifti_masks

            for st in converted:
                paths = find_nifti_masks(st, s.masks, self.src)
                if not paths:
                    continue
                info = image_info([st])
                stats = []
                for p in paths:
                    try:
                        stt = p.stat()
                        stats.append((p.name, stt.st_size, stt.st_mtime_ns))
                    except OSError:
                        stats.append((p.name, None, None))
                h = sha256_json({"nifti": stats, "image": info[st.key]["input_hash"], "masks": masks_cfg, "version": CONVERTER_VERSION})
                payload = {
                    "kind": "nifti",
                    "nifti_paths": [str(p) for p in paths],
                    "stacks": [st],
                    "images": info,
                    "settings": s.masks,
                    "out": str(self.out),
                    "patient_id": info[st.key]["ids"]["patient_id"],
                    "study_uid": info[st.key]["ids"]["study_uid"],
                    "series_uid": info[st.key]["ids"]["series_uid"],
                    "input_hash": h,
                    "compresslevel": s.compresslevel,
                }
                queue(f"nifti-{st.key}", payload)
        if not items:
            return rows
        from ..logs import progress

        pay = dict(items)
        with progress("Converting masks", len(items)) as advance:
            for oc in executor.map_unordered(convert_masks, items):
                if oc.ok:
                    rows += oc.value
                else:
                    p = pay[oc.key]
                    rows.append(
                        {
                            **{c: "" for c in COLUMNS},
                            "patient_id": p["patient_id"],
                            "study_uid": p["study_uid"],
                            "series_uid": p["series_uid"],
                            "modality": "",
                            "kind": "mask",
                            "status": "failed",
                            "reason": _clean_error(oc.error),
                            "n_files": 1,
                            "voxel_count": None,
                            "volume_ml": None,
                            "input_hash": p["input_hash"],
                        }
                    )
                advance()
        return rows

    def _missing_roi_rows(self, plan: IngestPlan, mask_rows: list[dict]) -> list[dict]:
        """A skipped mask row per patient and configured ROI that no converted mask provides.

        Only when ``masks.rois`` is configured; patients without a converted image are not
        listed (their images are already reported).
        """
        from .roi import normalise_name

        wanted = list(self.settings.masks.rois)
        if not wanted:
            return []
        have: dict[str, set[str]] = defaultdict(set)
        for r in mask_rows:
            if r.get("status") == "converted" and r.get("roi"):
                have[r["patient_id"]].add(normalise_name(r["roi"]))
        patients: dict[str, dict] = {}
        for st in plan.stacks:
            if st.status == "converted" and st.key in plan.payload_of:
                ids = plan.payload_of[st.key]["ids"]
                patients.setdefault(ids["patient_id"], ids)
        out = []
        for pid, ids in sorted(patients.items()):
            for roi in wanted:
                if normalise_name(roi) in have[pid]:
                    continue
                out.append(
                    {
                        **{c: "" for c in COLUMNS},
                        "patient_id": pid,
                        "study_uid": ids.get("study_uid", ""),
                        "kind": "mask",
                        "roi": roi,
                        "status": "skipped",
                        "reason": f"configured ROI '{roi}' not found for this patient (no RTSTRUCT/SEG/NIfTI ROI matched it)",
                        "n_files": 0,
                        "voxel_count": None,
                        "volume_ml": None,
                        "_case": f"{pid}/missing__{roi}",
                    }
                )
        return out

    # ------------------------------------------------------------------ manifest
    def _write_manifest(self, rows: list[dict]) -> None:
        write_manifest(self.out, rows)


_INT_COLUMNS = ("n_files", "voxel_count")
_FLOAT_COLUMNS = ("volume_ml",)
_SORT = ("patient_id", "kind", "modality", "path", "series_uid", "stack", "roi")


def _cell(r: dict, c: str):
    v = r.get(c)
    if c in _INT_COLUMNS:
        return None if v is None or v == "" or (isinstance(v, float) and v != v) else int(v)
    if c in _FLOAT_COLUMNS:
        return None if v is None or v == "" else float(v)
    return "" if v is None else str(v)


def write_manifest(out: Path, rows: list[dict]) -> None:
    """Write ``manifest.parquet`` (pyarrow: int64/float64/string columns) and ``manifest.csv``.

    Columns: :data:`biomarkers.manifest.COLUMNS`; rows sorted by patient, kind, modality, path.
    Written with pyarrow and the csv module (no pandas import in the ingest process).
    """
    import csv
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..io import atomic_path, write_text

    table_rows = sorted(({c: _cell(r, c) for c in COLUMNS} for r in rows), key=lambda r: tuple(r[k] for k in _SORT))
    types = {c: pa.int64() if c in _INT_COLUMNS else pa.float64() if c in _FLOAT_COLUMNS else pa.string() for c in COLUMNS}
    table = pa.table({c: pa.array([r[c] for r in table_rows], type=types[c]) for c in COLUMNS})
    with atomic_path(out / "manifest.parquet") as tmp:
        pq.write_table(table, tmp)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in table_rows:
        w.writerow(["" if r[c] is None else r[c] for c in COLUMNS])
    write_text(out / "manifest.csv", buf.getvalue())


def _read_old_manifest(out: Path) -> list[dict] | None:
    """Mask rows of the previous run (from manifest.csv: no pandas needed while workers run)."""
    import csv

    p = out / "manifest.csv"
    if not p.is_file():
        return None
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            return [r for r in csv.DictReader(fh) if r.get("kind") == "mask"]
    except (OSError, csv.Error, UnicodeDecodeError):  # a damaged manifest only means recomputing
        return None


def _reusable(old: list[dict] | None, input_hash: str, out: Path) -> list[dict] | None:
    if not old:
        return None
    rows = [dict(r) for r in old if r.get("input_hash") == input_hash]
    if not rows:
        return None
    for r in rows:
        if r["status"] == "converted" and not (out / r["path"]).is_file():
            return None
        r["voxel_count"] = int(float(r["voxel_count"])) if r.get("voxel_count") not in (None, "") else None
        r["volume_ml"] = float(r["volume_ml"]) if r.get("volume_ml") not in (None, "") else None
        r["n_files"] = int(float(r["n_files"])) if r.get("n_files") not in (None, "") else None
    return rows


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporary files a killed run left behind (``biomarkers.io.atomic_path`` names)."""
    for sub in ("images", "masks"):
        d = out / sub
        if d.is_dir():
            for p in d.rglob(".*.tmp*"):
                if p.is_file():
                    p.unlink(missing_ok=True)
    for p in out.glob(".*.tmp*"):
        if p.is_file():
            p.unlink(missing_ok=True)


def _clean_error(err: str | None) -> str:
    """First line of a worker error (no tracebacks in the manifest)."""
    from .convert import _no_paths

    msg = (err or "unknown error").strip().splitlines()[0]
    return _no_paths(msg)[:500]


def run_ingest(src, out, settings: IngestSettings | None = None, executor="local", deidentifier=None) -> RunReport:
    """Convenience: ``Ingest(src, out, settings, deidentifier, executor).run()``."""
    return Ingest(src, out, settings, deidentifier=deidentifier, executor=executor).run()
