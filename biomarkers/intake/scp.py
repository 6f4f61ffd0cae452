"""The DICOM C-STORE SCP: who may associate, what is accepted, how an instance is stored.

The transport is :mod:`biomarkers.intake.ul` (association negotiation with pynetdicom's PDU classes,
a lean data phase); :class:`StoreService` also serves pynetdicom's events for the C-GET of
``biomarkers pull``.

* **Association**: only a listed ``(calling AE title, source address)`` pair is accepted; any other is
  rejected with A-ASSOCIATE-RJ (rejected-permanent, service-user; reason "calling AE title not
  recognised" for an unknown AE title, "no reason given" for a known AE title from an unlisted
  address). The called AE title must be ours. TLS is optional (``scp.tls``).
* **Presentation contexts**: the storage SOP classes ingest converts (CT/MR/PET, single- and
  multi-frame) plus RTSTRUCT and SEG, each in every transfer syntax pydicom (with the installed
  pylibjpeg plugins) decodes, one context per proposed syntax: the sender's own encoding is kept.
* **C-STORE**: the dataset is parsed (every element, nested sequences included) and checked
  against the request (SOP class and instance UIDs, Study/Series UIDs, pixel data length for
  native encodings). A malformed dataset gets a failure status (0xC210) and a log line; the
  association and the other instances carry on. A good one is written durably
  (:meth:`Spool.store`) *before* the success status (0x0000) is returned. The bytes written
  are the dataset exactly as received, behind a file meta header built from the request.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from .dataset import STATUS_MALFORMED, Malformed, file_meta, inspect_dataset
from .spool import Spool

LOG = logging.getLogger("biomarkers.intake")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # the spool cannot be written (disk full, permissions)
STATUS_SOP_MISMATCH = 0xA900  # dataset does not match the request's SOP class / instance
# STATUS_MALFORMED = 0xC210 (dataset.py): cannot understand: the dataset cannot be parsed or is incomplete
STATUS_CONFLICT = 0xC211  # same SOP Instance UID already received with different content
STATUS_UNSUPPORTED = 0xC212  # a storage object ingest does not handle


def storage_sop_classes() -> dict[str, str]:
    """SOP class UID -> name of every object ingest converts (images, RTSTRUCT, SEG)."""
    from ..dicom.index import IMAGE_SOPS, RTSTRUCT_SOP, SEG_SOP

    return {**IMAGE_SOPS, RTSTRUCT_SOP: "RT Structure Set", SEG_SOP: "Segmentation"}


def decodable_transfer_syntaxes() -> list[str]:
    """Transfer syntaxes whose pixel data this installation decodes (native ones first)."""
    from pydicom import uid as U
    from pydicom.pixels import get_decoder

    native = [U.ExplicitVRLittleEndian, U.ImplicitVRLittleEndian, U.DeflatedExplicitVRLittleEndian,
              U.ExplicitVRBigEndian]
    out = list(native)
    for ts in U.AllTransferSyntaxes:
        if ts in out or not ts.is_compressed:
            continue
        try:
            if get_decoder(ts).is_available:
                out.append(ts)
        except (NotImplementedError, ValueError):
            continue
    return [str(t) for t in out]


def check_instance(data: bytes, transfer_syntax: str, sop_class: str, sop_uid: str, sop_classes: dict) -> str:
    """Check a received encoded dataset against its C-STORE request; returns its Study Instance UID.

    Raises :class:`Malformed` with the DIMSE status to return; the reason quotes no value.
    """
    if not (sop_uid.isascii() and sop_uid.isprintable()):  # it names the spooled file's meta (ASCII)
        raise Malformed(STATUS_MALFORMED, "malformed request: the SOP Instance UID is not printable ASCII")
    v = inspect_dataset(data, transfer_syntax)
    if v.get("SOPClassUID") != sop_class or v.get("SOPInstanceUID") != sop_uid:
        raise Malformed(STATUS_SOP_MISMATCH, "dataset does not match the request (SOP Class / Instance UID)")
    if sop_class not in sop_classes:
        raise Malformed(STATUS_UNSUPPORTED, f"unsupported storage SOP class {sop_class}")
    if not v.get("StudyInstanceUID") or not v.get("SeriesInstanceUID"):
        raise Malformed(STATUS_MALFORMED, "malformed dataset: no Study or Series Instance UID")
    if "PixelData" in v or sop_class in _image_sops():
        _check_pixels(v)
    return v["StudyInstanceUID"]


def _image_sops() -> set[str]:
    from ..dicom.index import IMAGE_SOPS

    return set(IMAGE_SOPS)


def _check_pixels(v: dict) -> None:
    for k in ("Rows", "Columns", "BitsAllocated", "PixelData"):
        if not v.get(k):
            raise Malformed(STATUS_MALFORMED, f"malformed image: no {k}")
    if v["_encapsulated"]:
        return  # compressed frames: their size is known only once decoded (ingest checks them)
    try:
        frames = int(float(v.get("NumberOfFrames") or 1))
    except ValueError:
        raise Malformed(STATUS_MALFORMED, "malformed image: Number of Frames is not a number") from None
    bits = v["Rows"] * v["Columns"] * frames * (v.get("SamplesPerPixel") or 1) * v["BitsAllocated"]
    need = (bits + 7) // 8
    if v["PixelData"] < need:
        raise Malformed(STATUS_MALFORMED, f"malformed image: truncated pixel data ({v['PixelData']} of {need} bytes)")


@dataclass
class AssocStats:
    calling_ae: str
    peer: str
    started: float = field(default_factory=time.time)
    instances: int = 0
    duplicates: int = 0
    refused: int = 0
    bytes: int = 0
    studies: dict = field(default_factory=dict)  # study_ref -> instances stored or duplicate


class StoreService:
    """C-STORE handling shared by the gateway's SCP and the C-GET of ``biomarkers pull``.

    ``on_event(kind, **counts)`` receives ``stored`` / ``duplicate`` / ``refused`` / ``error``
    notifications (for the status counters); reasons carry no identifiers.
    """

    def __init__(self, spool: Spool, audit=None, on_event=None, peers=None, validate: bool = True):
        self.spool = spool
        self.audit = audit
        self.on_event = on_event or (lambda kind, **kw: None)
        self.peers = peers
        self.validate = validate
        self.sop_classes = storage_sop_classes()
        self._assocs: dict[int, AssocStats] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- association (biomarkers.intake.ul)
    def admit(self, ae: str, addr: str):
        """None when ``(ae, addr)`` may associate, else ((result, source, diagnostic), reason) of the A-ASSOCIATE-RJ."""
        if self.peers is None:
            return None
        known = [p for p in self.peers if p.ae_title == ae]
        if any(p.allows(ae, addr) for p in known):
            return None
        if not known:
            return (0x01, 0x01, 0x03), "calling AE title not listed"
        return (0x01, 0x01, 0x01), "source address not listed for this AE title"

    def rejected(self, ae: str, addr: str, reason: str) -> None:
        if self.audit is not None:
            self.audit.write("association", calling_ae=ae, peer=addr, accepted=False, reason=reason)
        LOG.warning("association rejected: %s (calling AE %s, peer %s)", reason, ae, addr)
        self.on_event("rejected", reason=reason)

    def opened(self, ae: str, addr: str) -> AssocStats:
        st = AssocStats(ae, addr)
        self.on_event("accepted")
        if self.audit is not None:
            self.audit.write("association", calling_ae=ae, peer=addr, accepted=True)
        return st

    def closed(self, st: AssocStats, aborted: bool) -> None:
        if self.audit is not None:
            self.audit.write("association_end", calling_ae=st.calling_ae, peer=st.peer, instances=st.instances,
                             duplicates=st.duplicates, refused=st.refused, bytes=st.bytes, studies=st.studies,
                             duration_s=round(time.time() - st.started, 3),
                             state="aborted" if aborted else "released")

    def stats(self, assoc) -> AssocStats:
        """Counts of a pynetdicom association on which we are the requestor (C-GET sub-operations)."""
        with self._lock:
            st = self._assocs.get(id(assoc))
            if st is None:
                st = self._assocs[id(assoc)] = AssocStats(str(assoc.acceptor.ae_title).strip(),
                                                          str(assoc.acceptor.address))
            return st

    # ----------------------------------------------------------------- C-STORE
    def on_store(self, event) -> int:
        """pynetdicom's EVT_C_STORE (the C-GET of ``biomarkers pull``)."""
        req = event.request
        return self.store_dataset(req.DataSet.getvalue(), str(event.context.transfer_syntax),
                                  str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID),
                                  self.stats(event.assoc))

    def store_dataset(self, data: bytes, transfer_syntax: str, sop_class: str, sop_uid: str, st: AssocStats) -> int:
        """Check and store one encoded dataset; returns the DIMSE status (0x0000: stored durably)."""
        try:
            study_uid = check_instance(data, transfer_syntax, sop_class, sop_uid, self.sop_classes)
        except Malformed as err:
            st.refused += 1
            LOG.warning("instance refused (status 0x%04X): %s; calling AE %s", err.status, err, st.calling_ae)
            self.on_event("refused", reason=str(err))
            return err.status
        encoded = file_meta(sop_class, sop_uid, transfer_syntax, st.calling_ae) + data
        try:
            res = self.spool.store(encoded, sop_uid, study_uid)
        except OSError as err:
            st.refused += 1
            msg = f"spool write failed ({err.strerror or type(err).__name__})"
            LOG.error("instance refused (status 0x%04X): %s", STATUS_OUT_OF_RESOURCES, msg)
            self.on_event("error", reason=msg)
            return STATUS_OUT_OF_RESOURCES
        if res.status == "conflict":
            st.refused += 1
            msg = "an instance with the same SOP Instance UID but different content is already stored (kept)"
            LOG.warning("instance refused (status 0x%04X): %s; study %s", STATUS_CONFLICT, msg, res.study_ref)
            self.on_event("refused", reason=msg)
            return STATUS_CONFLICT
        st.studies[res.study_ref] = st.studies.get(res.study_ref, 0) + 1
        if res.status == "duplicate":
            st.duplicates += 1
            self.on_event("duplicate", study=res.study_ref)
        else:
            st.instances += 1
            st.bytes += res.nbytes
            self.on_event("stored", study=res.study_ref, nbytes=res.nbytes)
        return STATUS_SUCCESS


def no_delay(event) -> None:
    """Disable Nagle's algorithm on the association's socket: the C-STORE response goes out at once
    instead of waiting for a delayed ACK (about 40 ms per instance otherwise)."""
    import socket

    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def ssl_context(tls):
    """Server-side :class:`ssl.SSLContext` from :class:`~biomarkers.intake.config.TLSSettings`."""
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    if tls.ca is not None:
        ctx.load_verify_locations(str(tls.ca))
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else (ssl.CERT_OPTIONAL if tls.ca else ssl.CERT_NONE)
    return ctx


def build_ae(ae_title: str, max_pdu: int = 4 * 1024 * 1024, max_associations: int = 8, network_timeout: float = 60,
             scp: bool = True):
    """A pynetdicom AE supporting every storage context ingest handles (and Verification)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = max_pdu
    ae.maximum_associations = max_associations
    ae.network_timeout = network_timeout
    ae.acse_timeout = network_timeout
    ae.dimse_timeout = network_timeout
    if scp:
        ae.require_called_aet = True
        tss = decodable_transfer_syntaxes()
        for uid in storage_sop_classes():
            ae.add_supported_context(uid, tss)
        ae.add_supported_context(Verification)
    return ae
