"""``biomarkers ingest SRC OUT``: index, qualify and convert DICOM series to NIfTI.

Stage API (validate / plan / run)::

    ing = Ingest("dicom/", "dataset/", IngestSettings())
    ing.validate()            # inputs, secret, settings
    plan = ing.plan()         # index + qualify + what is cached (a dry run stops here)
    report = ing.run(plan)    # converts (per stack, through the executor), masks, manifest

Output folder (``OUT``)::

    manifest.parquet, manifest.csv     one row per image stack / mask (biomarkers.manifest.ManifestRow)
    report.json                        counts, problems by reason, unused input files
    images/<patient>/<MODALITY>_<series_tag>.nii.gz (+ .json sidecar)
    masks/<patient>/<MODALITY>_<series_tag>__<roi>.nii.gz

``<series_tag>`` is the first 12 digits after the root of the pseudonymised
series UID, plus ``_e2``... (later echoes), ``_ph`` / ``_real`` / ``_imaginary`` (complex image
types) and ``_s2``, ``_s3``... for further stacks of a series (the manifest ``stack``: ``#e2``,
``#ph``, ``#2``...). Diffusion series get ``.bval``/``.bvec`` beside their NIfTI. Every
identifier written goes through :class:`biomarkers.deid.Deidentifier` unless
de-identification is explicitly disabled (recorded in report.json).

Reruns are incremental: an image stack or a segmentation object whose input files (SOP
instance, size, mtime), settings and pseudonyms hash to the ``input_hash`` of rows an earlier
run left (:meth:`biomarkers.manifest.Manifest.previous`: its manifest, and the sidecars of images
a run interrupted before its manifest wrote) is not converted again when its files verify.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BiomarkersError, InputError
from ..executors import Executor, get_executor
from ..io import sha256_json
from ..manifest import ImageRef, Kind, Manifest, ManifestRow, Status
from ..report import RunReport
from .convert import CONVERTER_VERSION, ConvertJob, MaskJob, convert_masks, convert_stack, warm_up
from .index import IndexResult
from .masks import MaskSettings
from .model import ImageStack, SegmentationObject
from .qualify import qc_flags, qualify
from .stacks import build_stacks
from .settings import IngestSettings

log = logging.getLogger(__name__)

__all__ = ["Ingest", "IngestPlan", "IngestSettings", "MaskSettings", "run_ingest"]

@dataclass
class IngestPlan:
    """What a run will do (the result of :meth:`Ingest.plan`)."""

    index: IndexResult
    stacks: list[ImageStack]
    items: list[ConvertJob] = field(default_factory=list)  # one job per stack to convert
    cached: list[ManifestRow] = field(default_factory=list)  # manifest rows reused as is
    rows: list[ManifestRow] = field(default_factory=list)  # rows decided at plan time (skipped...)
    job_of: dict[str, ConvertJob] = field(default_factory=dict)  # stack key -> job (all stacks)
    previous: Manifest = field(default_factory=Manifest)  # the rows an earlier run left, for reuse

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

    #: ``executor="auto"``: convert in this process when the job holds at most this many bytes
    #: (the source files' sizes before indexing, the plan's pixel data after), else on a local
    #: process pool with one worker per core. Ingest's pools fork (``LocalExecutor`` context
    #: ``fork``: workers start in milliseconds, sharing this process's imported modules), so a
    #: pool pays from a few series on; spawned workers would cost ~0.5-1 s of CPU each.
    AUTO_SERIAL_MAX_BYTES = 16 * 2**20
    #: What ingest's pool workers import as they start (while this process indexes; a forked pool's
    #: coordinator imports them once for all), with what the first job would import (``np.median``:
    #: numpy.ma; ``datetime.strptime``: _strptime).
    PRELOAD = ("biomarkers.dicom.convert", "nibabel", "isal.igzip", "numpy.ma", "_strptime")

    def _executor(self, plan: IngestPlan | None = None) -> tuple[Executor, bool]:
        spec = self._executor_spec
        if isinstance(spec, Executor):
            return spec, False
        if spec == "auto":
            if plan is None:
                return get_executor("serial"), True
            nbytes = sum(_pixel_bytes(job) for job in plan.items)
            spec = "serial" if nbytes <= self.AUTO_SERIAL_MAX_BYTES else "local"
        return get_executor(spec, preload=self.PRELOAD, context="fork"), True

    def _auto_executor(self, exclude) -> Executor:
        """``executor="auto"`` before indexing: decided by the sizes of the source's files (the
        walk is kept for :meth:`_index`); a pool is started at once, so its workers start while
        this process reads the headers."""
        from ..io import walk_files

        self._walked = walk_files(self.src, hidden=True, exclude=exclude)
        if sum(size for _, _, size, _ in self._walked) <= self.AUTO_SERIAL_MAX_BYTES:
            return get_executor("serial")
        ex = get_executor("local", preload=self.PRELOAD, context="fork")
        ex.start()
        return ex

    # ------------------------------------------------------------------ validate
    def validate(self) -> None:
        """Check inputs before any work: SRC exists, OUT is not SRC, the secret is usable."""
        if not self.src.is_dir():
            raise InputError(f"{self.src}: source folder not found (or not a folder)")
        from ..io import check_apart

        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"{self.out}: exists and is not a folder")
        deid = self.deidentifier  # raises SecretError when the secret is missing
        from ..deid.keys import require_synthetic

        if deid.enabled and deid.pseudonymizer.demo:  # the public demo secret: synthetic data only
            require_synthetic(self.src)
        synthetic = False
        if self.settings.deid.demo:  # demo mode: the demo keeps its synthetic cohort inside its OUT
            try:
                require_synthetic(self.src)
                synthetic = True
            except BiomarkersError:
                pass
        # OUT inside SRC (never written to) refused; SRC inside OUT too, except a synthetic cohort in demo mode
        check_apart(self.src, self.out, src_inside_out=synthetic)
        self.index_cache_path()  # raises InputError for a cache inside OUT or SRC

    # ------------------------------------------------------------------ plan
    def plan(self, executor: Executor | None = None) -> IngestPlan:
        """Index SRC, qualify every stack and decide what to convert (nothing is written to OUT; the
        source-side index cache, if enabled, learns the headers it read)."""
        own = False
        if executor is None:
            executor, own = self._executor()
        try:
            idx = self._index(self._exclude(), executor)
        finally:
            if own:
                executor.close()
        if not idx.files and not idx.segmentations and not idx.unsupported:  # refused objects are reported, not 'none'
            raise InputError(f"{self.src}: no DICOM file found under the source folder ({idx.n_files} file(s) read, "
                             "none DICOM; symlinked folders are followed)")
        s = self.settings
        stacks = build_stacks(idx.files, s.position_tolerance_mm)
        plan = IngestPlan(index=idx, stacks=stacks, previous=self._previous())
        deid = self.deidentifier
        conv = s.conversion_dict()
        for st in stacks:
            qualify(st, s.allow_gaps, s.spacing_tolerance, s.position_tolerance_mm)
            job = plan.job_of[st.key] = self._job(st)
            if st.status == Status.SKIPPED:
                plan.rows.append(job.row(Status.SKIPPED, st.reason, st.grid, qc_flags(st.qc)))
                continue
            files = sorted((f.sop_instance_uid, f.frame, f.size, f.mtime_ns) for f in st.all_files)
            r = job.ref
            ids = {"patient_id": r.patient_id, "study_uid": r.study_uid, "series_uid": r.series_uid, "stack": r.stack}
            job.input_hash = sha256_json(
                {"files": files, "settings": conv, "ids": ids, "path": r.path, "version": CONVERTER_VERSION}
            )
            cached = plan.previous.reusable(job.input_hash, self.out, self._usable)
            if cached is not None:
                st.status = Status.CONVERTED
                plan.cached += cached
            else:
                plan.items.append(job)
        # unsupported objects: one row per series
        by_series: dict[tuple, list] = defaultdict(list)
        for f in idx.unsupported:
            by_series[(f.patient_id, f.study_uid, f.series_uid)].append(f)
        for (pid, study, series), fs in sorted(by_series.items()):
            if not pid:
                continue
            ref = ImageRef(deid.patient_id(pid), deid.uid(study), deid.uid(series), "", fs[0].modality)
            plan.rows.append(ManifestRow.image(ref, Status.SKIPPED, fs[0].reason or "unsupported object",
                                               n_files=len({f.path for f in fs})))
        return plan

    def _exclude(self) -> Path | None:
        """OUT when it lies inside SRC (not indexed), else None."""
        return self.out.resolve() if self.src.resolve() in self.out.resolve().parents else None

    #: Up to this many files to read the main process indexes (fast header reads, ~0.2 ms a
    #: file) while the workers start; above, chunks of files are indexed by the executor.
    SERIAL_INDEX_MAX_FILES = 5000
    #: A forked pool (its workers ready at once) indexes from this many files on.
    FORKED_INDEX_MIN_FILES = 512

    def index_cache_path(self) -> Path | None:
        """Where this source's header cache lives (``settings.index_cache``), or None when off."""
        from .index_cache import resolve_cache_path

        return resolve_cache_path(self.settings.index_cache, self.src, self.out)

    def _index(self, exclude, executor: Executor) -> IndexResult:
        from ..io import walk_files
        from .index import merge, read_headers, split_cached
        from .index_cache import IndexCache

        cache_path = self.index_cache_path()
        cache = IndexCache(cache_path) if cache_path is not None else None
        try:
            walked, self._walked = getattr(self, "_walked", None), None
            todo, hits, present = split_cached(walked or walk_files(self.src, hidden=True, exclude=exclude), cache)
            n = len(todo)
            if executor.name == "local" and n:
                executor.start()  # in this thread: a forking pool forks only from the main thread
            forked = getattr(executor, "started_with", "") == "fork"
            if n > self.SERIAL_INDEX_MAX_FILES or (forked and n >= self.FORKED_INDEX_MIN_FILES):
                fresh = read_headers(todo, executor)
            elif executor.name != "local" or n == 0 or forked:
                fresh = read_headers(todo, None)
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

    def _job(self, st: ImageStack) -> ConvertJob:
        """The conversion job of a stack: pseudonymised ids, output path, settings (no secret)."""
        deid = self.deidentifier
        if not st.patient_id:
            st.status, st.reason = Status.SKIPPED, "missing PatientID"
        pid = deid.patient_id(st.patient_id) if st.patient_id else "UNKNOWN"
        series = deid.uid(st.series_uid)
        n = st.part  # stack key "<series>#<label>_<n>": tag "<MODALITY>_<series_tag>_<label>_s<n>"
        suffix = "".join(f"_{x}" for x in st.label) + (f"_s{n}" if n > 1 else "")
        tag = f"{_safe(st.modality)}_{series_tag(series, deid.settings.uid_root)}{suffix}"
        stack = "#" + st.key.split("#", 1)[1] if "#" in st.key else ""
        ref = ImageRef(pid, deid.uid(st.study_uid), series, stack, st.modality, f"images/{pid}/{tag}.nii.gz", tag)
        settings = {**self.settings.conversion_dict(), "compresslevel": self.settings.compresslevel}
        return ConvertJob(st, ref, str(self.out), settings, deid.enabled)

    def _previous(self) -> Manifest:
        """The rows an earlier run left (:meth:`Manifest.previous`); its manifest only when it is as written
        (without a record, e.g. records lost: when it reads as a manifest; damaged: reported, not reused)."""
        def readable(p) -> bool:
            return Manifest.read(self.out) is not None

        return Manifest.previous(self.out, lambda rel: self._verified(rel, "its rows are not reused", adopt=readable))

    def _usable(self, row: ManifestRow) -> bool:
        """Whether the files of a reused converted row are as written (:meth:`_verified`): an image's sidecar
        (without a record: when it names the row's ``input_hash``), its NIfTI (without a record: when its
        voxels hash to the row's ``content_hash``) and its .bval/.bvec when recorded; a mask's NIfTI."""
        import json

        if row.kind == Kind.MASK:
            return self._verified(row.path, "reconverting its masks", row.content_hash)
        stem = row.path[: -len(".nii.gz")]
        return (self._verified(f"{stem}.json", "reconverting its image",
                               adopt=lambda p: json.loads(p.read_text("utf-8"))["input_hash"] == row.input_hash)
                and self._verified(row.path, "reconverting it", row.content_hash)
                and all(self._verified(f"{stem}{ext}", "reconverting its image")
                        for ext in (".bval", ".bvec") if self.ledger.get(f"{stem}{ext}")))

    # ------------------------------------------------------------------ integrity
    @property
    def ledger(self):
        """The integrity records of OUT (:class:`biomarkers.integrity.Ledger`): what is reused is verified."""
        if getattr(self, "_ledger", None) is None:
            from ..integrity import Ledger

            self._ledger = Ledger(self.out)
        return self._ledger

    def _verified(self, rel: str, redo: str, content_hash: str = "", adopt=None) -> bool:
        """Whether OUT/rel can be reused: recorded and as written (a damaged file is reported, then redone);
        a NIfTI not recorded yet (interrupted run) when its voxels hash to ``content_hash``."""
        if adopt is None and content_hash:
            adopt = lambda p: voxel_hash(p) == content_hash  # noqa: E731
        return self.ledger.reusable(rel, redo, adopt)

    def _record(self, rows: list[ManifestRow]) -> None:
        """Record the files of newly converted rows (NIfTI, image sidecar, bval/bvec) as written."""
        for r in rows:
            if r.status != Status.CONVERTED or not r.path or r.cached:
                continue
            for rel in _written_files(self.out, r.path):
                self.ledger.add(rel)
        self.ledger.save(every_s=5.0)

    # ------------------------------------------------------------------ run
    def run(self, plan: IngestPlan | None = None) -> RunReport:
        """Convert what the plan says, then masks; write manifest and report.json (OUT locked meanwhile)."""
        self.validate()
        self.out.mkdir(parents=True, exist_ok=True)
        with self.ledger.writing("biomarkers ingest"):
            return self._run(plan)

    def _run(self, plan: IngestPlan | None) -> RunReport:
        from ..logs import progress

        if plan is None and self._executor_spec == "auto":  # the source's size picks the executor
            executor, own = self._auto_executor(self._exclude()), True
        else:
            executor, own = self._executor(plan)
        report = RunReport("ingest")
        try:
            if plan is None:
                plan = self.plan(executor)
            self.out.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(self.out)
            deid = self.deidentifier
            for job in plan.items:
                job.deid = self.settings.deid.model_dump(mode="json")
            rows: list[ManifestRow] = list(plan.rows) + list(plan.cached)
            by_key = {job.stack.key: job for job in plan.items}
            log.info("%s; converting on %s", plan.summary(), executor.describe())
            with progress("Converting series", len(plan.items)) as advance:
                items = [(job.stack.key, job) for job in _largest_first(plan.items)]
                for oc in executor.map_unordered(convert_stack, items):
                    job = by_key[oc.key]
                    st = job.stack
                    if oc.ok:
                        st.status = Status.CONVERTED
                        rows.append(oc.value)
                        self._record([oc.value])
                        log.debug("converted %s", job.ref.path)
                    else:
                        st.status, st.reason = Status.FAILED, _clean_error(oc.error)
                        rows.append(job.row(Status.FAILED, st.reason, st.grid, qc_flags(st.qc)))
                        log.warning("%s/%s: failed: %s", job.ref.patient_id, job.ref.tag, st.reason)
                    advance()
            mask_rows = self._run_masks(plan, executor)
            self._record(mask_rows)
            rows += mask_rows + self._missing_roi_rows(plan, mask_rows)
        finally:
            if own:
                executor.close()
        Manifest(rows).write(self.out)
        from ..manifest import MANIFEST_CSV, MANIFEST_FILE

        keep = {rel for r in rows if r.status == Status.CONVERTED and r.path for rel in _written_files(self.out, r.path)}
        for rel in set(self.ledger.files) - keep:
            self.ledger.forget(rel)  # outputs of earlier runs no longer in the manifest
        for rel in (MANIFEST_FILE, MANIFEST_CSV):
            self.ledger.add(rel)
        for r in rows:
            status = Status(r.status)
            report.add(case=r.case_name, status=status.case, reason=r.reason if status != Status.CONVERTED else "",
                       cached=r.cached, kind=str(r.kind), qc_flags=r.qc_flags)
        idx = plan.index
        n_out = {k: sum(1 for r in rows if r.kind == k and r.status == Status.CONVERTED) for k in Kind}
        report.extra.update(
            deidentified=deid.enabled,
            demo_secret=bool(getattr(deid.pseudonymizer, "demo", False)) if deid.enabled else False,
            files={"indexed": idx.n_files, "image_frames": len(idx.files), "segmentation_objects": len(idx.segmentations),
                   "unsupported_objects": len(idx.unsupported), "not_used": len(idx.unused),
                   "headers_from_cache": idx.n_cached},
            unused_files=self._unused_files_report(idx),
            outputs={"images": n_out[Kind.IMAGE], "masks": n_out[Kind.MASK]},
            settings=self.settings.model_dump(mode="json"),
            executor=executor.describe(),
        )
        report.write(self.out / "report.json")
        self.ledger.add("report.json")
        self.last_unused = self.unused_files(idx)  # for the printed report (paths stay on this machine)
        self.last_index = idx
        return report

    def unused_files(self, idx: IndexResult) -> list[dict]:
        """Every input file not used: ``path`` (relative to SRC), ``reason``, ``duplicate_of``.

        For the operator at the source site (printed by the CLI); never written to OUT
        when de-identification is on (see :meth:`_unused_files_report`).
        """
        out = [{"path": u.rel, "reason": u.reason, "duplicate_of": u.duplicate_of} for u in idx.unused]
        out += [{"path": f.rel, "reason": f.reason or "unsupported object", "duplicate_of": ""} for f in idx.unsupported]
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
            json.dump({"src": str(Path(self.src).resolve()), "unused_files": entries,
                       "roi_references": self._roi_references(idx)}, fh, indent=2)
        os.replace(tmp, path)
        return path

    def _roi_references(self, idx: IndexResult) -> dict[str, str]:
        """Keyed reference -> original name of every ROI/segment name the outputs show by reference
        (the site-side map, like the linkage table; read here, from the segmentation files)."""
        from .roi import name_allowed

        deid = self.deidentifier
        if not deid.enabled:
            return {}
        ref = deid.pseudonymizer.referencer("roi")
        allow = self.settings.masks.allow_roi_names
        out: dict[str, str] = {}
        import pydicom

        for obj in idx.segmentations:
            try:
                ds = pydicom.dcmread(obj.path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - reported elsewhere
                continue
            names = [str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])]
            names += [str(g.get("SegmentLabel", "")) for g in ds.get("SegmentSequence", [])]
            for n in names:
                if n and not name_allowed(n, allow):
                    out[ref(n)] = n
        return dict(sorted(out.items()))

    def _unused_files_report(self, idx: IndexResult) -> list[dict]:
        """``unused_files`` of report.json. Source paths often carry patient names or ids
        (hospital exports name folders after patients), so with de-identification on each
        file is given by a keyed reference (``ref``, stable across runs with the same
        secret) instead of its path; the paths are printed, not stored."""
        rows = self.unused_files(idx)
        deid = self.deidentifier
        if not deid.enabled:
            return rows
        src_ref = deid.pseudonymizer.referencer("src")  # the export's references: one format (src-...)

        def ref(rel: str) -> str:
            return src_ref(rel) if rel else ""

        return [{"ref": ref(r["path"]), "reason": r["reason"], "duplicate_of": ref(r["duplicate_of"])} for r in rows]

    # ------------------------------------------------------------------ masks
    def _run_masks(self, plan: IngestPlan, executor: Executor) -> list[ManifestRow]:
        s = self.settings
        deid = self.deidentifier
        converted = [st for st in plan.stacks if st.status == Status.CONVERTED and st.grid is not None]
        by_patient: dict[str, list[ImageStack]] = defaultdict(list)
        for st in converted:
            by_patient[st.patient_id].append(st)
        masks_cfg = s.masks.model_dump(mode="json")
        items: list[tuple[str, MaskJob]] = []
        rows: list[ManifestRow] = []

        def queue(key: str, stacks: list[ImageStack], ids: tuple[str, str, str], h: str, **kw) -> None:
            """Reuse the manifest rows of an unchanged object, else queue it for conversion."""
            reuse = plan.previous.reusable(h, self.out, self._usable)
            if reuse is not None:
                rows.extend(reuse)
                return
            images = {st.key: plan.job_of[st.key].ref for st in stacks}
            roi_ref = deid.pseudonymizer.referencer("roi") if deid.enabled else None  # ROI names keyed (issue 15)
            items.append((key, MaskJob(stacks, images, s.masks, str(self.out), *ids, h, s.compresslevel,
                                       roi_reference=roi_ref, **kw)))

        segs: list[SegmentationObject] = sorted(plan.index.segmentations, key=lambda o: o.rel)
        for n, obj in enumerate(segs):
            cands = by_patient.get(obj.patient_id, [])
            h = sha256_json({"seg": [obj.series_uid, obj.rel.rsplit("/", 1)[-1], _stat(obj.path)],
                             "images": sorted(plan.job_of[st.key].input_hash for st in cands),
                             "masks": masks_cfg, "deid": deid.enabled, "version": CONVERTER_VERSION})
            ids = (deid.patient_id(obj.patient_id) if obj.patient_id else "UNKNOWN", deid.uid(obj.study_uid), deid.uid(obj.series_uid))
            queue(f"seg-{n}", cands, ids, h, object=obj)
        if s.masks.nifti_pattern:
            from .masks import find_nifti_masks

            for st in converted:
                paths = find_nifti_masks(st, s.masks, self.src)
                if not paths:
                    continue
                job = plan.job_of[st.key]
                stats = [(p.name, *(_stat(p) or (None, None))) for p in paths]
                h = sha256_json({"nifti": stats, "image": job.input_hash, "masks": masks_cfg, "version": CONVERTER_VERSION})
                ids = (job.ref.patient_id, job.ref.study_uid, job.ref.series_uid)
                queue(f"nifti-{st.key}", [st], ids, h, nifti_paths=[str(p) for p in paths])
        if not items:
            return rows
        from ..logs import progress

        jobs = dict(items)
        with progress("Converting masks", len(items)) as advance:
            for oc in executor.map_unordered(convert_masks, items):
                rows += oc.value if oc.ok else [jobs[oc.key].row(None, "", Status.FAILED, _clean_error(oc.error))]
                advance()
        return rows

    def _missing_roi_rows(self, plan: IngestPlan, mask_rows: list[ManifestRow]) -> list[ManifestRow]:
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
            if r.status == Status.CONVERTED and r.roi:
                have[r.patient_id].add(normalise_name(r.roi))
        patients: dict[str, ImageRef] = {}
        for st in plan.stacks:
            if st.status == Status.CONVERTED and st.key in plan.job_of:
                ref = plan.job_of[st.key].ref
                patients.setdefault(ref.patient_id, ref)
        reason = "configured ROI '{}' not found for this patient (no RTSTRUCT/SEG/NIfTI ROI matched it)"
        return [ManifestRow.mask(pid, ref.study_uid, "", None, roi, Status.SKIPPED, reason.format(roi), n_files=0,
                                 case=f"{pid}/missing__{roi}")
                for pid, ref in sorted(patients.items()) for roi in wanted if normalise_name(roi) not in have[pid]]


def _pixel_bytes(job: ConvertJob) -> int:
    """Bytes of stored pixel data a job reads."""
    return sum((f.rows or 0) * (f.columns or 0) * ((f.bits_allocated or 16) // 8) for f in job.stack.all_files)


def _largest_first(items: list[ConvertJob]) -> list[ConvertJob]:
    """Jobs by decreasing pixel data (ties in plan order): on a pool, the last jobs to finish are
    small ones, so no worker converts a large series alone at the end."""
    return sorted(items, key=_pixel_bytes, reverse=True)


def _stat(path: Path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file (part of input hashes), None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def voxel_hash(path: Path) -> str:
    """:func:`biomarkers.io.sha256_array` of a NIfTI's stored voxels (the manifest's ``content_hash``)."""
    import nibabel as nib
    import numpy as np

    from ..io import sha256_array

    return sha256_array(np.asanyarray(nib.load(str(path)).dataobj))


def _written_files(out: Path, rel: str) -> list[str]:
    """The files a converted row wrote: its NIfTI and, when present, the sidecar ``.json``,
    ``.bval`` and ``.bvec`` beside it (paths relative to OUT)."""
    stem = rel[: -len(".nii.gz")] if rel.endswith(".nii.gz") else rel
    return [rel] + [f"{stem}{ext}" for ext in (".json", ".bval", ".bvec") if (out / f"{stem}{ext}").is_file()]


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporary files a killed run left behind (``biomarkers.io.atomic_path`` names)."""
    subs = [out / sub for sub in ("images", "masks") if (out / sub).is_dir()]
    for p in [*out.glob(".*.tmp*"), *(p for d in subs for p in d.rglob(".*.tmp*"))]:
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
