"""The gateway's upper-layer acceptor (biomarkers.intake.ul) against independent peers: pynetdicom's SCU
and its own AE as the reference acceptor, plus hand-built PDUs for the protocol errors.

Properties: the accepted presentation contexts equal pynetdicom's AE's for the same proposal; messages
fragmented over many PDUs (our small maximum PDU) and responses within a peer's small maximum arrive
whole; C-ECHO; release; an unsupported DIMSE command, a PDU on a context not accepted, an oversized or
unknown PDU get an A-ABORT and the other associations carry on; the association limit rejects
(transient, local limit exceeded); a silent peer is aborted after network_timeout."""

from __future__ import annotations

import socket
import struct
import time

import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from test_intake_support import SECRET, dataset_bytes_pydicom, files_of

CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Q/R FIND: not a storage class
JPEG_LS = "1.2.840.10008.1.2.4.80"


@pytest.fixture
def receiver(tmp_path):
    """An acceptor on a real spool; ``make(**options)`` starts one (stopped at the end)."""
    from biomarkers.deid import Pseudonymizer
    from biomarkers.intake.config import Peer
    from biomarkers.intake.scp import StoreService
    from biomarkers.intake.spool import Spool
    from biomarkers.intake.ul import Acceptor

    started = []
    events: list = []

    def make(**kw):
        spool = Spool(tmp_path / f"spool{len(started)}", tmp_path / f"received{len(started)}",
                      Pseudonymizer(SECRET.encode()), fsync=kw.pop("fsync", False))
        service = StoreService(spool, on_event=lambda kind, **x: events.append(kind),
                               peers=[Peer(ae_title="PYSCU", addresses=["127.0.0.1"])])
        acc = Acceptor(service, "GATEWAY", **kw).start("127.0.0.1", 0)
        acc.spool, acc.events = spool, events
        started.append(acc)
        return acc

    yield make
    for acc in started:
        acc.shutdown()


def _scu(max_pdu: int = 16382):
    from pynetdicom import AE

    ae = AE(ae_title="PYSCU")
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def _associate(ae, port: int):
    return ae.associate("127.0.0.1", port, ae_title="GATEWAY")


def test_accepted_contexts_equal_pynetdicom_ae(receiver):
    """Same proposal to our acceptor and to pynetdicom's AE (build_ae's contexts): same answer per context."""
    from biomarkers.intake.scp import build_ae

    ours = receiver()
    ref_ae = build_ae("GATEWAY")
    ref = ref_ae.start_server(("127.0.0.1", 0), block=False)
    try:
        proposals = [(CT, [JPEG_LS, ExplicitVRLittleEndian, ImplicitVRLittleEndian]), (CT, [ExplicitVRBigEndian]),
                     (FIND, [ImplicitVRLittleEndian]), ("1.2.840.10008.5.1.4.1.1.66.4", [ImplicitVRLittleEndian]),
                     (CT, ["1.2.840.10008.1.2.4.100"]), ("1.2.840.10008.1.1", [ImplicitVRLittleEndian])]
        answers = []
        for port in (ours.server_address[1], ref.server_address[1]):
            ae = _scu()
            for uid, tss in proposals:
                ae.add_requested_context(uid, tss)
            assoc = _associate(ae, port)
            assert assoc.is_established
            answers.append(sorted((cx.context_id, cx.result, str(cx.abstract_syntax),
                                   str(cx.transfer_syntax[0]) if cx.result == 0 else None)
                                  for cx in assoc.accepted_contexts + assoc.rejected_contexts))
            assoc.release()
            assert assoc.is_released
        assert answers[0] == answers[1]
        assert any(r[1] != 0 for r in answers[0]) and any(r[1] == 0 for r in answers[0])  # both kinds occur
    finally:
        ref.shutdown()


def test_fragmented_messages_and_small_peer_pdus_arrive_whole(receiver):
    """Our maximum PDU 4 kB: a 64 kB CT arrives in ~17 P-DATA-TF PDUs; the sender's own maximum is the
    smallest pynetdicom accepts, so the response must respect it. The spooled dataset is byte-identical."""
    from pynetdicom import _config

    acc = receiver(max_pdu=4096)
    f = files_of("STS_002", "CT")[0]
    ae = _scu(max_pdu=4096)
    ae.add_requested_context(CT, pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's own encoding, sent raw
    try:
        assoc = _associate(ae, acc.server_address[1])
        assert assoc.is_established
        st = assoc.send_c_store(f)
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert st.Status == 0x0000
    stored = list(acc.spool.incoming.rglob("*.dcm"))
    assert len(stored) == 1 and dataset_bytes_pydicom(stored[0]) == dataset_bytes_pydicom(f)
    assert pydicom.dcmread(stored[0]) == pydicom.dcmread(f)


def test_echo_and_release(receiver):
    acc = receiver()
    ae = _scu()
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = _associate(ae, acc.server_address[1])
    assert assoc.is_established
    assert [int(assoc.send_c_echo().Status) for _ in range(3)] == [0, 0, 0]
    assoc.release()
    assert assoc.is_released and not assoc.is_aborted


# ------------------------------------------------------------------------------ raw PDUs
def _rq_pdu(contexts=((1, CT, ImplicitVRLittleEndian),), calling="PYSCU", called="GATEWAY", max_pdu=16384) -> bytes:
    """An A-ASSOCIATE-RQ encoded by pynetdicom's PDU classes (an independent encoder)."""
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
    from pynetdicom.presentation import build_context

    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title, prim.called_ae_title = calling, called
    cxs = []
    for cid, uid, ts in contexts:
        cx = build_context(uid, [ts])
        cx.context_id = cid
        cxs.append(cx)
    prim.presentation_context_definition_list = cxs
    ml = MaximumLengthNotification()
    ml.maximum_length_received = max_pdu
    prim.user_information = [ml]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    return pdu.encode()


def _recv_pdu(sock) -> tuple[int, bytes]:
    head = b""
    while len(head) < 6:
        chunk = sock.recv(6 - len(head))
        if not chunk:
            return -1, b""
        head += chunk
    kind, _, n = struct.unpack(">BBI", head)
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            break
        body += chunk
    return kind, body


def _closed(sock) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def _pdata(cid: int, mch: int, value: bytes) -> bytes:
    return struct.pack(">BBI", 0x04, 0, len(value) + 6) + struct.pack(">IBB", len(value) + 2, cid, mch) + value


def _encode_command(ds) -> bytes:
    from pynetdicom.dsutils import encode

    return encode(ds, True, True)


def _established(port: int, **kw) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(_rq_pdu(**kw))
    kind, _ = _recv_pdu(sock)
    assert kind == 0x02  # A-ASSOCIATE-AC
    return sock


@pytest.mark.parametrize("case", ["unsupported command", "context not accepted", "oversized PDU", "unknown PDU",
                                  "data before command"])
def test_protocol_errors_abort_and_the_service_carries_on(receiver, case):
    from pynetdicom.dimse_primitives import C_FIND
    from pynetdicom.dimse_messages import C_FIND_RQ

    acc = receiver(max_pdu=16384)
    port = acc.server_address[1]
    other = _established(port)  # an association open meanwhile must carry on
    sock = _established(port)
    if case == "unsupported command":
        prim = C_FIND()
        prim.MessageID, prim.AffectedSOPClassUID, prim.Priority = 1, CT, 2
        msg = C_FIND_RQ()
        msg.primitive_to_message(prim)
        msg.command_set.CommandDataSetType = 0x0101
        sock.sendall(_pdata(1, 0x03, _encode_command(msg.command_set)))
    elif case == "context not accepted":
        sock.sendall(_pdata(3, 0x03, b"\0" * 8))
    elif case == "oversized PDU":
        sock.sendall(struct.pack(">BBI", 0x04, 0, 16385))
    elif case == "unknown PDU":
        sock.sendall(struct.pack(">BBI", 0x09, 0, 4) + b"\0" * 4)
    else:
        sock.sendall(_pdata(1, 0x02, b"\0" * 8))
    kind, body = _recv_pdu(sock)
    assert kind == 0x07 and body[2] == 0x02, (kind, body)  # A-ABORT from the service provider
    assert _closed(sock)
    # the association open meanwhile is still served (its release is answered), and a new one too
    other.sendall(struct.pack(">BBI", 0x05, 0, 4) + b"\0" * 4)
    assert _recv_pdu(other)[0] == 0x06
    other.close()
    ae = _scu()
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = _associate(ae, port)
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()


def test_association_limit_rejects_transient(receiver):
    acc = receiver(max_associations=1)
    port = acc.server_address[1]
    first = _established(port)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(_rq_pdu())
    kind, body = _recv_pdu(sock)
    assert kind == 0x03 and tuple(body[1:4]) == (0x02, 0x03, 0x02), (kind, body)  # rejected transient, limit
    sock.close()
    first.sendall(struct.pack(">BBI", 0x05, 0, 4) + b"\0" * 4)
    assert _recv_pdu(first)[0] == 0x06
    first.close()
    time.sleep(0.2)
    assert _established(port) is not None  # a slot is free again
    assert "rejected" in acc.events


def test_called_ae_title_must_be_ours(receiver):
    acc = receiver()
    sock = socket.create_connection(("127.0.0.1", acc.server_address[1]), timeout=10)
    sock.sendall(_rq_pdu(called="SOMEONE"))
    kind, body = _recv_pdu(sock)
    assert kind == 0x03 and tuple(body[1:4]) == (0x01, 0x01, 0x07)


def test_silent_peer_aborted_after_network_timeout(receiver):
    acc = receiver(network_timeout=1)
    sock = _established(acc.server_address[1])
    kind, body = _recv_pdu(sock)  # the socket's own timeout (10 s) fails the test when nothing comes
    assert kind == 0x07 and _closed(sock)


def test_response_split_within_a_tiny_peer_maximum(receiver):
    """A peer whose maximum PDU is 64 bytes gets the C-ECHO-RSP in several P-DATA-TF PDUs of at most 64
    bytes, which reassemble (decoded by pydicom) into a Success response to our message."""
    from pydicom.filereader import read_dataset
    from pynetdicom.dimse_messages import C_ECHO_RQ
    from pynetdicom.dimse_primitives import C_ECHO

    acc = receiver()
    sock = _established(acc.server_address[1], contexts=((1, "1.2.840.10008.1.1", ImplicitVRLittleEndian),),
                        max_pdu=64)
    prim = C_ECHO()
    prim.MessageID, prim.AffectedSOPClassUID = 7, "1.2.840.10008.1.1"
    msg = C_ECHO_RQ()
    msg.primitive_to_message(prim)
    sock.sendall(_pdata(1, 0x03, _encode_command(msg.command_set)))
    parts, last = [], False
    while not last:
        kind, body = _recv_pdu(sock)
        assert kind == 0x04 and len(body) <= 64, (kind, len(body))
        length, cid, mch = struct.unpack(">IBB", body[:6])
        assert cid == 1 and mch & 0x01 and length == len(body) - 4
        parts.append(body[6:])
        last = bool(mch & 0x02)
    assert len(parts) > 1
    import io

    rsp = read_dataset(io.BytesIO(b"".join(parts)), is_implicit_VR=True, is_little_endian=True)
    assert (rsp.CommandField, rsp.MessageIDBeingRespondedTo, rsp.Status) == (0x8030, 7, 0x0000)


def test_ipv4_mapped_peer_read_as_ipv4():
    """A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; the allow-list lists IPv4 addresses."""
    from biomarkers.intake.ul import _plain_address

    assert _plain_address("::ffff:10.0.0.5") == "10.0.0.5"
    assert _plain_address("10.0.0.5") == "10.0.0.5"
    assert _plain_address("fe80::1%eth0") == "fe80::1"
    assert _plain_address("2001:db8::1") == "2001:db8::1"


def test_a_uid_that_is_not_ascii_gets_a_failure_status_not_an_abort(receiver):
    """A C-STORE whose SOP Instance UID (request and dataset alike) holds a non-ASCII byte: the sender gets
    0xC210 (cannot understand) for that instance, the association carries on, nothing is spooled."""
    import io

    from pydicom.filereader import read_dataset

    acc = receiver()
    f = files_of("STS_002", "CT")[0]
    uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID).encode()
    bad = uid[:-1] + b"\xe9"
    data = dataset_bytes_pydicom(f).replace(uid, bad)  # same length: the dataset stays well formed

    def el(elem: int, value: bytes) -> bytes:  # implicit VR little endian command element (hand-built)
        value += b"\0" * (len(value) % 2)
        return struct.pack("<HHI", 0, elem, len(value)) + value

    body = b"".join([el(0x0002, CT.encode()), el(0x0100, struct.pack("<H", 0x0001)), el(0x0110, struct.pack("<H", 5)),
                     el(0x0700, struct.pack("<H", 0)), el(0x0800, struct.pack("<H", 0x0000)), el(0x1000, bad)])
    command = el(0x0000, struct.pack("<I", len(body))) + body
    sock = _established(acc.server_address[1], contexts=((1, CT, ImplicitVRLittleEndian),))
    sock.sendall(_pdata(1, 0x03, command) + _pdata(1, 0x02, data))
    kind, pdu = _recv_pdu(sock)
    assert kind == 0x04, (kind, pdu)  # a response, not an A-ABORT
    rsp = read_dataset(io.BytesIO(pdu[6:]), is_implicit_VR=True, is_little_endian=True)
    assert (rsp.CommandField, rsp.MessageIDBeingRespondedTo, rsp.Status) == (0x8001, 5, 0xC210)
    sock.sendall(struct.pack(">BBI", 0x05, 0, 4) + b"\0" * 4)
    assert _recv_pdu(sock)[0] == 0x06  # the association carries on to its release
    assert not list(acc.spool.incoming.rglob("*.dcm")) and "refused" in acc.events
