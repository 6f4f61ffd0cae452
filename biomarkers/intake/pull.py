"""``biomarkers pull``: query/retrieve studies from a PACS into the spool, resumably.

1. **Query** (QIDO-RS with dicomweb-client, or C-FIND with pynetdicom, Study Root): studies
   (``--study`` UIDs, else ``StudyDate >= --since``), their series (``--modality``: series of
   these modalities, plus the study's RTSTRUCT / SEG series), their instances.
2. **Plan**: an instance already in the spool or the received-studies folder is not fetched
   again, so a rerun after an interruption fetches only what is missing.
3. **Retrieve** the missing instances: WADO-RS (a whole series when none of it is here, else
   instance by instance), C-GET on the query association, or C-MOVE to ``scp.ae_title``
   (received by the running gateway, else by a receiver this command starts on ``scp.port``).
   Every instance goes through the gateway's checks and durable spool write.
4. **Hand-off**: the pulled studies are complete (the retrieve finished), so they leave the
   spool for the pipeline at once (no stability wait), and ``biomarkers run`` processes them.
   Other studies waiting in the spool (pushed to the gateway, not yet stable) stay there: the
   gateway hands them over once they are stable. (``biomarkers run`` reads the whole received
   folder, but its stages are incremental: studies processed before are not computed again.)

The console shows counts only: no UID, date or path.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from dataclasses import dataclass, field

from ..errors import BiomarkersError, ConfigError, InputError
from .config import GatewayConfig
from .spool import SpoolLock, split_meta

LOG = logging.getLogger("biomarkers.intake")
SEGMENTATION_MODALITIES = ("RTSTRUCT", "SEG")
#: modalities whose series ingest converts: a study missing any of their instances is not processed
CONVERTED_MODALITIES = ("CT", "MR", "PT", *SEGMENTATION_MODALITIES)


@dataclass
class Remote:
    """One instance found on the PACS."""

    study: str
    series: str
    sop: str
    modality: str = ""


@dataclass
class PullReport:
    studies: int = 0
    series: int = 0
    instances: int = 0
    present: int = 0
    fetched: int = 0
    failed: int = 0
    errors: list = field(default_factory=list)
    study_refs: list = field(default_factory=list)
    held: list = field(default_factory=list)  # study refs not handed to the pipeline: instances missing
    processed: bool | None = None

    def summary(self) -> str:
        s = (f"pull: {self.studies} stud{'y' if self.studies == 1 else 'ies'}, {self.series} series, "
             f"{self.instances} instances on the PACS: {self.present} already here, {self.fetched} fetched, "
             f"{self.failed} failed")
        if self.held:
            s += (f"; {len(self.held)} stud{'y' if len(self.held) == 1 else 'ies'} not processed "
                  f"(CT/MR/PT/RTSTRUCT/SEG instances missing: {', '.join(self.held)})")
        if self.processed is not None:
            s += "; pipeline " + ("done" if self.processed else "FAILED (see the gateway status)")
        return s


def select_series(series: list[tuple[str, str]], modalities: list[str]) -> list[tuple[str, str]]:
    """``(series UID, modality)`` of one study to retrieve: every series without a filter; else the series of
    these modalities and, when there is one, the study's RTSTRUCT / SEG series (ingest matches them to the
    images they reference and reports the others as not used)."""
    if not modalities:
        return list(series)
    chosen = [s for s in series if s[1].upper() in modalities]
    if chosen and not set(modalities) & set(SEGMENTATION_MODALITIES):
        chosen += [s for s in series if s[1].upper() in SEGMENTATION_MODALITIES]
    return chosen


def _date_ok(value: str, since: dt.date | None) -> bool:
    if since is None:
        return True
    try:
        return dt.datetime.strptime(str(value)[:8], "%Y%m%d").date() >= since
    except ValueError:
        return False  # no usable StudyDate: not selected by a date filter


#: the reason given when a study-level query does not find the study (an unknown ``--study`` UID)
NOT_FOUND = "no study-level match for it: is it on the PACS? check the --study UIDs"


class _Incomplete(Exception):
    """Query answers that do not add up (asked again by :func:`_consistent`)."""


def _consistent(query, attempts: int = 3):
    """``query()``, asked again when its answers do not add up against the PACS's own counts (Number of
    Study Related Series / Series Related Instances, when it gives them), then refused: a pull must not
    silently miss an instance (Orthanc 1.10 answered an instance query of a one-instance series with no
    match about once in 50 C-FINDs)."""
    for attempt in range(attempts):
        try:
            return query()
        except _Incomplete as err:
            LOG.warning("pull: the PACS's answers for a study are inconsistent (%s); %s", err,
                        "asking again" if attempt + 1 < attempts else "giving up")
            reason = str(err)
    raise InputError(f"pull: the PACS's query answers for a study stay inconsistent ({reason}); "
                     "run the pull again later")


def _count(ds, keyword: str) -> int | None:
    """An integer count attribute of a C-FIND answer, None when absent or empty."""
    return _count_text(ds.get(keyword))


def _count_text(v) -> int | None:
    try:
        return None if v is None or str(v).strip() == "" else int(v)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------- DICOMweb
class DicomwebPACS:
    def __init__(self, src):
        from dicomweb_client import DICOMwebClient

        self.client = DICOMwebClient(url=src.url.rstrip("/"))
        self.timeout = src.timeout_s

    @staticmethod
    def _v(item: dict, tag: str) -> str:
        vals = item.get(tag, {}).get("Value") or [""]
        return str(vals[0])

    def query(self, since, studies, modalities) -> list[Remote]:
        out: list[Remote] = []
        if studies:
            found = [{"0020000D": {"Value": [u]}, "00080020": {"Value": [""]}} for u in studies]
        else:
            filt = {"StudyDate": f"{since:%Y%m%d}-"} if since else {}
            found = self.client.search_for_studies(search_filters=filt, fields=["StudyDate"], get_remaining=True)
        for st in found:
            study = self._v(st, "0020000D")
            if not studies and not _date_ok(self._v(st, "00080020"), since):
                continue
            out += _consistent(lambda: self._study(study, modalities))
        return out

    def _study(self, study: str, modalities: list[str]) -> list[Remote]:
        head = self.client.search_for_studies(search_filters={"StudyInstanceUID": study},
                                              fields=["NumberOfStudyRelatedSeries"])
        series = self.client.search_for_series(study_instance_uid=study, fields=["NumberOfSeriesRelatedInstances"],
                                               get_remaining=True)
        if not head:
            raise _Incomplete(NOT_FOUND)
        want = _count_text(self._v(head[0], "00201206")) if len(head) == 1 else None
        if want is not None and want != len(series):
            raise _Incomplete(f"{len(series)} series listed of {want}")
        counts = {self._v(se, "0020000E"): _count_text(self._v(se, "00201209")) for se in series}
        out: list[Remote] = []
        for uid, mod in select_series([(self._v(se, "0020000E"), self._v(se, "00080060")) for se in series],
                                      modalities):
            hits = self.client.search_for_instances(study_instance_uid=study, series_instance_uid=uid,
                                                    get_remaining=True)
            if counts.get(uid) is not None and counts[uid] != len(hits):
                raise _Incomplete(f"{len(hits)} instances listed of {counts[uid]} in a series")
            out += [Remote(study, uid, self._v(inst, "00080018"), mod) for inst in hits]
        return out

    def retrieve(self, todo: list[Remote], store, complete_series: set[str]) -> None:
        from pydicom import dcmwrite

        def put(ds) -> None:
            buf = io.BytesIO()
            dcmwrite(buf, ds, enforce_file_format=True)
            data = buf.getvalue()
            store(data[split_meta(data):], str(ds.file_meta.TransferSyntaxUID), str(ds.SOPClassUID),
                  str(ds.SOPInstanceUID))

        by_series: dict[tuple[str, str], list[Remote]] = {}
        for r in todo:
            by_series.setdefault((r.study, r.series), []).append(r)
        for (study, series), items in by_series.items():
            if series in complete_series:  # none of it is here: one request for the series
                for ds in self.client.iter_series(study_instance_uid=study, series_instance_uid=series):
                    put(ds)
            else:
                for r in items:
                    put(self.client.retrieve_instance(study, series, r.sop))


# --------------------------------------------------------------------------------------- DIMSE
class DimsePACS:
    def __init__(self, src, cfg: GatewayConfig):
        self.src = src
        self.cfg = cfg

    def _assoc(self, contexts, roles=(), handlers=()):
        from pynetdicom import evt

        from .scp import build_ae, no_delay

        handlers = [*handlers, (evt.EVT_CONN_OPEN, no_delay)]

        ae = build_ae(self.cfg.scp.ae_title, max_pdu=self.cfg.scp.max_pdu, network_timeout=self.src.timeout_s,
                      scp=False)
        for c in contexts:
            ae.add_requested_context(*c) if isinstance(c, tuple) else ae.add_requested_context(c)
        assoc = ae.associate(self.src.host, self.src.port, ae_title=self.src.ae_title, ext_neg=list(roles),
                             evt_handlers=list(handlers))
        if not assoc.is_established:
            raise InputError(f"pull: the PACS {self.src.ae_title} at {self.src.host}:{self.src.port} did not accept "
                             "the association (check its AE title, port and that it knows our AE title)")
        return assoc

    def _find(self, assoc, level: str, **keys) -> list:
        from pydicom.dataset import Dataset
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        q = Dataset()
        q.QueryRetrieveLevel = level
        for k, v in keys.items():
            setattr(q, k, v)
        out = []
        for status, ident in assoc.send_c_find(q, FIND):
            if status is None:
                raise InputError("pull: the PACS did not answer a C-FIND (timeout or aborted association)")
            if status.Status in (0xFF00, 0xFF01):
                if ident is None:  # a match we cannot read: never drop it silently
                    raise _Incomplete("a C-FIND match without a readable identifier")
                out.append(ident)
            elif status.Status not in (0x0000,):
                raise InputError(f"pull: C-FIND failed with status 0x{status.Status:04X}")
        return out

    def query(self, since, studies, modalities) -> list[Remote]:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        assoc = self._assoc([FIND])
        try:
            out: list[Remote] = []
            if studies:
                found = [(u, "") for u in studies]
            else:
                hits = self._find(assoc, "STUDY", StudyInstanceUID="",
                                  StudyDate=f"{since:%Y%m%d}-" if since else "")
                found = [(str(h.StudyInstanceUID), str(h.get("StudyDate", ""))) for h in hits]
            for study, date in found:
                if not studies and not _date_ok(date, since):
                    continue
                out += self._study(assoc, study, modalities)
            return out
        finally:
            assoc.release()

    def _study(self, assoc, study: str, modalities: list[str]) -> list[Remote]:
        return _consistent(lambda: self._study_once(assoc, study, modalities))

    def _study_once(self, assoc, study: str, modalities: list[str]) -> list[Remote]:
        head = self._find(assoc, "STUDY", StudyInstanceUID=study, NumberOfStudyRelatedSeries="")
        series = self._find(assoc, "SERIES", StudyInstanceUID=study, SeriesInstanceUID="", Modality="",
                            NumberOfSeriesRelatedInstances="")
        if not head:
            raise _Incomplete(NOT_FOUND)
        want = _count(head[0], "NumberOfStudyRelatedSeries") if len(head) == 1 else None
        if want is not None and want != len(series):
            raise _Incomplete(f"{len(series)} series listed of {want}")
        counts = {str(se.SeriesInstanceUID): _count(se, "NumberOfSeriesRelatedInstances") for se in series}
        out: list[Remote] = []
        found = [(str(se.SeriesInstanceUID), str(se.get("Modality", ""))) for se in series]
        for uid, mod in select_series(found, modalities):
            hits = self._find(assoc, "IMAGE", StudyInstanceUID=study, SeriesInstanceUID=uid, SOPInstanceUID="")
            if counts.get(uid) is not None and counts[uid] != len(hits):
                raise _Incomplete(f"{len(hits)} instances listed of {counts[uid]} in a series")
            out += [Remote(study, uid, str(inst.SOPInstanceUID), mod) for inst in hits]
        return out

    def _identifiers(self, todo: list[Remote], complete_series: set[str]):
        from pydicom.dataset import Dataset

        done_series = set()
        for r in todo:
            q = Dataset()
            q.StudyInstanceUID, q.SeriesInstanceUID = r.study, r.series
            if r.series in complete_series:
                if r.series in done_series:
                    continue
                done_series.add(r.series)
                q.QueryRetrieveLevel = "SERIES"
            else:
                q.QueryRetrieveLevel = "IMAGE"
                q.SOPInstanceUID = r.sop
            yield q

    def retrieve(self, todo: list[Remote], service, complete_series: set[str]) -> None:
        if self.src.retrieve == "get":
            self._get(todo, service, complete_series)
        else:
            self._move(todo, service, complete_series)

    def _get(self, todo, service, complete_series) -> None:
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

        from .scp import decodable_transfer_syntaxes, storage_sop_classes

        tss = decodable_transfer_syntaxes()
        sops = list(storage_sop_classes())
        contexts = [GET] + [(s, tss) for s in sops]
        roles = [build_role(s, scp_role=True) for s in sops]
        assoc = self._assoc(contexts, roles, [(evt.EVT_C_STORE, service.on_store)])
        try:
            for q in self._identifiers(todo, complete_series):
                self._statuses(assoc.send_c_get(q, GET), "C-GET")
        finally:
            assoc.release()

    @staticmethod
    def _statuses(responses, what: str) -> None:
        for status, _ in responses:
            if status is None:
                raise InputError(f"pull: the PACS did not answer a {what} (timeout or aborted association)")
            if status.Status in (0xFF00, 0xFF01, 0x0000):
                continue
            if status.Status == 0xB000:
                LOG.warning("pull: %s finished with warnings (some sub-operations failed)", what)
            else:
                raise InputError(f"pull: {what} failed with status 0x{status.Status:04X}")

    def _move_only(self, todo, complete_series) -> None:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

        assoc = self._assoc([MOVE])
        try:
            for q in self._identifiers(todo, complete_series):
                self._statuses(assoc.send_c_move(q, self.src.move_destination or self.cfg.scp.ae_title, MOVE),
                               "C-MOVE")
        finally:
            assoc.release()

    def _move(self, todo, service, complete_series) -> None:
        """C-MOVE to our AE title, received by an acceptor on ``scp.port`` for the time of the retrieve."""
        from .scp import ssl_context
        from .ul import Acceptor

        c = self.cfg.scp
        server = Acceptor(service, c.ae_title, c.max_pdu, c.max_associations, c.network_timeout_s,
                          ssl_context(c.tls) if c.tls is not None else None, fsync=c.fsync).start(c.host, c.port)
        try:
            self._move_only(todo, complete_series)
        finally:
            server.shutdown()


# --------------------------------------------------------------------------------------- pull
def pull(cfg: GatewayConfig, pipeline, since: dt.date | None = None, studies: list[str] | None = None,
         modalities: list[str] | None = None, run: bool = True) -> PullReport:
    """Query, retrieve what is missing, hand the studies to the pipeline; see the module docstring."""
    if cfg.pull is None:
        raise ConfigError("the gateway config has no pull section (pull.protocol, pull.dicomweb or pull.dimse)")
    studies = list(studies or [])
    modalities = [m.upper() for m in (modalities or [])]
    p = cfg.pull
    lock = SpoolLock(cfg.spool)
    if not lock.acquire():
        if not (p.protocol == "dimse" and p.dimse.retrieve == "move"):
            raise BiomarkersError("a gateway (or another pull) is using this spool: stop it first, or let the "
                                  "running gateway receive the pull as a C-MOVE (pull.dimse.retrieve: move)")
        return _delegate(cfg, pipeline, p.dimse, since, studies, modalities)
    try:
        return _pull_locked(cfg, pipeline, p, since, studies, modalities, run)
    finally:
        lock.release()


def _delegate(cfg, pipeline, src, since, studies, modalities) -> PullReport:
    """C-MOVE to the running gateway: it receives, spools and processes the studies itself."""
    from ..deid import Pseudonymizer
    from .spool import Spool

    d = pipeline.deid
    pseudo = Pseudonymizer.from_env(demo=d.demo, prefix=d.prefix, uid_root=d.uid_root, max_shift_days=d.max_shift_days)
    spool = Spool(cfg.spool, pipeline.source.dicom, pseudo, fsync=False, recover=False)  # read-only view
    pacs = DimsePACS(src, cfg)
    remote = pacs.query(since, studies, modalities)
    rep = _plan(remote, spool)
    todo = [r for r in remote if not spool.has(r.sop)]
    pacs._move_only(todo, _complete_series(remote, todo))
    deadline = time.time() + src.timeout_s
    while time.time() < deadline:
        spool.scan()
        if all(spool.has(r.sop) for r in todo):
            break
        time.sleep(0.2)
    rep.failed = sum(1 for r in todo if not spool.has(r.sop))
    rep.fetched = len(todo) - rep.failed
    return rep


def _plan(remote: list[Remote], spool) -> PullReport:
    rep = PullReport(instances=len(remote), studies=len({r.study for r in remote}),
                     series=len({r.series for r in remote}))
    rep.present = sum(1 for r in remote if spool.has(r.sop))
    return rep


def _complete_series(remote: list[Remote], todo: list[Remote]) -> set[str]:
    """Series none of whose instances is here (retrieved with one request)."""
    per, missing = {}, {}
    for r in remote:
        per[r.series] = per.get(r.series, 0) + 1
    for r in todo:
        missing[r.series] = missing.get(r.series, 0) + 1
    return {s for s, n in missing.items() if n == per[s]}


def _pull_locked(cfg, pipeline, p, since, studies, modalities, run) -> PullReport:
    from .scp import StoreService
    from .service import Gateway

    gw = Gateway(cfg, pipeline)
    pacs = DicomwebPACS(p.dicomweb) if p.protocol == "dicomweb" else DimsePACS(p.dimse, cfg)
    remote = pacs.query(since, studies, modalities)
    rep = _plan(remote, gw.spool)
    todo = [r for r in remote if not gw.spool.has(r.sop)]
    complete = _complete_series(remote, todo)
    service = StoreService(gw.spool, gw.audit, peers=cfg.scp.peers)
    t0 = time.time()
    counted = {"stored": 0, "refused": 0}

    def on_event(kind, **kw):
        gw.state.event(kind, **kw)
        if kind in ("stored", "duplicate"):
            counted["stored"] += kind == "stored"
        elif kind in ("refused", "error"):
            counted["refused"] += 1
            rep.errors.append(kw.get("reason", ""))

    service.on_event = on_event
    try:
        if p.protocol == "dicomweb":
            from .scp import AssocStats

            st = AssocStats("DICOMweb", "WADO-RS")
            pacs.retrieve(todo, lambda data, ts, cls, sop: service.store_dataset(data, ts, cls, sop, st), complete)
        else:
            pacs.retrieve(todo, service, complete)
    finally:
        rep.fetched = counted["stored"]
        rep.failed = sum(1 for r in todo if not gw.spool.has(r.sop))
        refs = sorted({gw.spool.study_ref(r.study) for r in remote})
        rep.study_refs = refs
        gw.audit.write("pull", protocol=p.protocol, studies=refs, instances=rep.instances, present=rep.present,
                       fetched=rep.fetched, failed=rep.failed, duration_s=round(time.time() - t0, 3))
    if rep.failed:
        LOG.warning("pull: %d instance(s) could not be retrieved; run the same pull again to fetch them",
                    rep.failed)
    if not run:
        gw.audit.close()
        return rep
    # A study missing instances of a converted modality would give a plausible but incomplete volume
    # (a missing first or last slice is not visible): it waits for the next pull. Instances of other
    # modalities (dose reports, screen captures) are not converted and do not hold a study back.
    rep.held = sorted({gw.spool.study_ref(r.study) for r in todo
                       if not gw.spool.has(r.sop) and r.modality.upper() in CONVERTED_MODALITIES})
    handoff = set(refs) - set(rep.held)
    if not handoff:
        gw.audit.close()
        return rep
    failed_before = gw.state.counts["studies_failed"]
    done = gw.process_stable(force=True, only=handoff)  # other studies in the spool wait to be stable
    rep.processed = (gw.state.counts["studies_failed"] == failed_before) if done else None
    gw._write_status(running=False)
    gw.audit.close()
    return rep
