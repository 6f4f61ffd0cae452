"""The gateway's receiving transport: a lean DICOM upper-layer acceptor (PS3.8) for the storage service.

Why not pynetdicom's ``AE.start_server`` for receiving: measured on 63 kB CT instances sent by
4 concurrent dcmtk ``storescu``, pynetdicom's acceptor alone (handler returning Success at once)
costs ~1.1 ms of CPU per instance and reaches ~650 instances/s, about 0.26x dcmtk's ``storescp``:
two polling threads per association (1 ms sleeps), a state machine and queues between them, and
every command set encoded and decoded through pydicom datasets. This module speaks the same
protocol on one asyncio event loop (one thread) for all associations, without polling.

* **Association** (Sta2 -> Sta6): the A-ASSOCIATE-RQ is decoded and the A-ASSOCIATE-AC / -RJ encoded
  with pynetdicom's PDU classes, and the presentation contexts (with SCP/SCU role selection) are
  negotiated by pynetdicom's :func:`~pynetdicom.presentation.negotiate_as_acceptor` against the
  contexts of :func:`~biomarkers.intake.scp.build_ae`: the accepted contexts are exactly those
  pynetdicom's AE would accept. Rejections (A-ASSOCIATE-RJ): protocol version (1, 2, 2), application
  context name (1, 1, 2), called AE title (1, 1, 7), the peer allow-list (1, 1, 3 / 1, 1, 1; see
  :class:`~biomarkers.intake.scp.StoreService`), too many associations (2, 3, 2). Asynchronous
  operations, user identity and extended negotiation items are not answered (the defaults apply,
  PS3.7 D.3.3). The request must arrive within ``network_timeout`` (ARTIM).
* **Data transfer** (Sta6): P-DATA-TF PDUs (at most our maximum length, on an accepted context;
  fragments of one message on one context, command before data set) are reassembled into C-STORE-RQ
  and C-ECHO-RQ messages. A C-STORE data set goes to :meth:`StoreService.store_dataset` (checks, then
  the durable spool write) and its C-STORE-RSP carries the returned status; C-ECHO-RQ gets Success.
  Responses respect the peer's maximum PDU length. A C-CANCEL-RQ is ignored (nothing is pending).
  A C-STORE-RQ without a data set or SOP Instance UID gets 0xC210, one whose SOP class is not its
  context's 0x0122; the association carries on.
* **Release / abort**: A-RELEASE-RQ -> A-RELEASE-RP, then the requestor closes. An A-ABORT from the
  peer, a closed connection, ``network_timeout`` without a PDU (we send an A-ABORT) or a peer that
  does not read our responses for as long ends the association as aborted.
  Any other PDU or DIMSE command, or a malformed PDU, gets an A-ABORT (service provider, with the
  PS3.8 reason) and the connection is closed; the other associations carry on.

Command sets are always implicit VR little endian (PS3.7 6.3.1); values used: Affected SOP Class
/ Instance UID, Command Field, Message ID, Command Data Set Type.
"""

from __future__ import annotations

import logging
import struct
import threading
from dataclasses import dataclass

LOG = logging.getLogger("biomarkers.intake")

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
_PDU = struct.Struct(">BBI")  # type, reserved, length
_PDV = struct.Struct(">IBB")  # item length, presentation context ID, message control header
_ELEMENT = struct.Struct("<HHI")  # implicit VR little endian element header
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP, C_CANCEL_RQ = 0x0001, 0x8001, 0x0030, 0x8030, 0x0FFF
NO_DATASET = 0x0101
RELEASE_RP = _PDU.pack(0x06, 0, 4) + b"\0" * 4
#: A-ABORT reasons (PS3.8 9.3.8, source 2: service provider)
NOT_SPECIFIED, UNRECOGNISED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0x00, 0x01, 0x02, 0x06
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
REJECT_DELAY_S = 0.25  # seconds; see Association.negotiate


class ProtocolError(Exception):
    """The peer broke the upper-layer protocol; ``reason`` is the A-ABORT reason to send."""

    def __init__(self, reason: int, message: str):
        super().__init__(message)
        self.reason = reason


class Closed(Exception):
    """The connection ended (peer closed, A-ABORT received, timeout, or our shutdown)."""


def abort_pdu(reason: int = NOT_SPECIFIED, source: int = 0x02) -> bytes:
    return _PDU.pack(0x07, 0, 4) + bytes((0, 0, source, reason))


def _element(tag: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    return _ELEMENT.pack(0, tag, len(value)) + value


def response_command(command: int, sop_class: str, message_id: int, status: int, sop_uid: str | None) -> bytes:
    """An encoded C-xxx-RSP command set (implicit VR little endian, ascending tags, with group length).

    The UIDs are the request's as :func:`parse_command` read them; a non-ASCII character (a request
    refused for it) is sent as ``?``.
    """
    us = struct.Struct("<H").pack
    body = b"".join([
        _element(0x0002, sop_class.encode("ascii", "replace")), _element(0x0100, us(command)),
        _element(0x0120, us(message_id)), _element(0x0800, us(NO_DATASET)), _element(0x0900, us(status)),
        *([_element(0x1000, sop_uid.encode("ascii", "replace"))] if sop_uid else []),
    ])
    return _element(0x0000, struct.pack("<I", len(body))) + body


def parse_command(data: bytes | memoryview) -> dict:
    """The values of a command set used here: {element number: value} (UIDs as str, US as int)."""
    out: dict = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            raise ProtocolError(INVALID_PARAMETER, "truncated command element")
        group, elem, length = _ELEMENT.unpack_from(data, pos)
        pos += 8
        if group != 0 or pos + length > end:
            raise ProtocolError(INVALID_PARAMETER, "invalid command set")
        if elem in (0x0002, 0x1000):
            out[elem] = bytes(data[pos:pos + length]).decode("ascii", "replace").strip("\0 ")
        elif elem in (0x0100, 0x0110, 0x0800) and length == 2:
            out[elem] = data[pos] | (data[pos + 1] << 8)
        pos += length
    return out


@dataclass
class Context:
    """An accepted presentation context."""

    id: int
    abstract_syntax: str
    transfer_syntax: str


def _plain_address(address) -> str:
    """The peer's IP address as the allow-list reads it (an IPv4-mapped IPv6 address as IPv4)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(str(address).split("%")[0])
    except ValueError:
        return str(address)
    return str(ip.ipv4_mapped) if ip.version == 6 and ip.ipv4_mapped else str(ip)


class Association:
    """One association (a coroutine on the acceptor's event loop; see the module docstring)."""

    def __init__(self, server: "Acceptor", reader, writer):
        self.server, self.reader, self.writer = server, reader, writer
        self.address = _plain_address((writer.get_extra_info("peername") or ("?",))[0])
        self.contexts: dict[int, Context] = {}
        self.peer_max_pdu = 0  # 0: no limit
        self.stats = None
        self.aborted = False

    # ---------------------------------------------------------------- transport
    async def _read_pdu(self) -> tuple[int, bytes]:
        import asyncio

        try:
            async with asyncio.timeout(self.server.network_timeout):
                kind, _, length = _PDU.unpack(await self.reader.readexactly(6))
                limit = (self.server.max_pdu or 1 << 32) if kind == 0x04 else 1 << 20  # P-DATA-TF: our maximum
                if length > limit:
                    raise ProtocolError(INVALID_PARAMETER, f"PDU of {length} bytes exceeds the maximum length")
                return kind, await self.reader.readexactly(length)
        except TimeoutError:
            self.abort()  # network_timeout without data: A-ABORT, as pynetdicom's idle timer does
            raise Closed("no data within network_timeout") from None
        except asyncio.IncompleteReadError:
            raise Closed("the peer closed the connection") from None
        except OSError as err:
            raise Closed(f"connection lost ({type(err).__name__})") from None

    def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise Closed("connection closed")
        self.writer.write(data)

    def send_message(self, context_id: int, command: bytes) -> None:
        """A command set (no data set) as P-DATA-TF PDUs within the peer's maximum length."""
        room = max((self.peer_max_pdu - 6) if self.peer_max_pdu else len(command), 2)
        out = []
        for i in range(0, len(command), room):
            chunk = command[i:i + room]
            mch = 0x03 if i + room >= len(command) else 0x01
            out.append(_PDU.pack(0x04, 0, len(chunk) + 6) + _PDV.pack(len(chunk) + 2, context_id, mch) + chunk)
        self.send(b"".join(out))

    def abort(self, reason: int = NOT_SPECIFIED) -> None:
        self.aborted = True
        if not self.writer.is_closing():
            self.writer.write(abort_pdu(reason))

    def interrupt(self) -> None:
        """Shutdown: A-ABORT and close (the pending read ends; an instance being stored finishes first)."""
        self.abort()
        self.writer.close()

    async def _await_close(self) -> None:
        """After A-ASSOCIATE-RJ / A-RELEASE-RP the requestor closes the connection (ARTIM: a few seconds)."""
        import asyncio

        try:
            async with asyncio.timeout(min(self.server.network_timeout, 5.0)):
                await self.writer.drain()
                while await self.reader.read(4096):
                    pass
        except (TimeoutError, OSError):
            pass

    # ---------------------------------------------------------------- phases
    async def run(self) -> None:
        srv = self.server
        try:
            if await self.negotiate():
                await self.serve()
        except ProtocolError as err:
            LOG.warning("association aborted: %s (peer %s)", err, self.address)
            self.abort(err.reason)
        except Closed:
            self.aborted = True
        except Exception:  # noqa: BLE001 - one association failing must not stop the service
            LOG.exception("association failed unexpectedly (peer %s)", self.address)
            self.abort()
        finally:
            self.writer.close()
            if self.stats is not None:
                srv.service.closed(self.stats, aborted=self.aborted)

    async def negotiate(self) -> bool:
        """Sta2: read the A-ASSOCIATE-RQ, answer it; True when the association is established."""
        import asyncio

        from pynetdicom.pdu import A_ASSOCIATE_RQ

        kind, body = await self._read_pdu()
        if kind != 0x01:
            raise ProtocolError(UNEXPECTED_PDU, f"expected an A-ASSOCIATE-RQ, received PDU type 0x{kind:02X}")
        pdu = A_ASSOCIATE_RQ()
        try:
            pdu.decode(_PDU.pack(kind, 0, len(body)) + body)
            rq = pdu.to_primitive()
        except Exception:  # noqa: BLE001 - any decoding failure is an invalid PDU
            raise ProtocolError(INVALID_PARAMETER, "invalid A-ASSOCIATE-RQ") from None
        calling = str(rq.calling_ae_title).strip()
        srv = self.server
        reject = None
        if not pdu.protocol_version & 1:
            reject = (0x01, 0x02, 0x02), "protocol version not supported"
        elif str(rq.application_context_name) != APPLICATION_CONTEXT:
            reject = (0x01, 0x01, 0x02), "application context name not supported"
        elif str(rq.called_ae_title).strip() != srv.ae_title:
            reject = (0x01, 0x01, 0x07), "called AE title not recognised"
        else:
            refused = srv.service.admit(calling, self.address)
            if refused is not None:
                reject = refused
            elif srv.established >= srv.max_associations:
                reject = (0x02, 0x03, 0x02), "too many associations"
        if reject is not None:
            # a pause before a rejection: pynetdicom's requestor (3.0) reports "aborted" instead of "rejected"
            # when the A-ASSOCIATE-RJ arrives before its calling thread checks that the connection is open
            await asyncio.sleep(REJECT_DELAY_S)
            (result, source, diagnostic), reason = reject
            self.send(self._reject_pdu(result, source, diagnostic))
            srv.service.rejected(calling, self.address, reason)
            await self._await_close()
            return False
        self.send(self._accept_pdu(rq))
        self.stats = srv.service.opened(calling, self.address)
        return True

    @staticmethod
    def _reject_pdu(result: int, source: int, diagnostic: int) -> bytes:
        from pynetdicom.pdu import A_ASSOCIATE_RJ
        from pynetdicom.pdu_primitives import A_ASSOCIATE

        prim = A_ASSOCIATE()
        prim.result, prim.result_source, prim.diagnostic = result, source, diagnostic
        pdu = A_ASSOCIATE_RJ()
        pdu.from_primitive(prim)
        return pdu.encode()

    def _accept_pdu(self, rq) -> bytes:
        from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
        from pynetdicom.pdu import A_ASSOCIATE_AC
        from pynetdicom.pdu_primitives import (A_ASSOCIATE, ImplementationClassUIDNotification,
                                               ImplementationVersionNameNotification, MaximumLengthNotification,
                                               SCP_SCU_RoleSelectionNegotiation)
        from pynetdicom.presentation import negotiate_as_acceptor

        roles = {}
        for item in rq.user_information:
            if isinstance(item, MaximumLengthNotification):
                self.peer_max_pdu = int(item.maximum_length_received or 0)
            elif isinstance(item, SCP_SCU_RoleSelectionNegotiation):
                roles[item.sop_class_uid] = (item.scu_role, item.scp_role)
        result, ac_roles = negotiate_as_acceptor(rq.presentation_context_definition_list,
                                                 self.server.supported_contexts, roles)
        self.contexts = {cx.context_id: Context(cx.context_id, str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                         for cx in result if cx.result == 0x00}
        ml = MaximumLengthNotification()
        ml.maximum_length_received = self.server.max_pdu
        uid = ImplementationClassUIDNotification()
        uid.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        ver = ImplementationVersionNameNotification()
        ver.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
        prim = A_ASSOCIATE()
        prim.application_context_name = APPLICATION_CONTEXT
        prim.calling_ae_title, prim.called_ae_title = rq.calling_ae_title, rq.called_ae_title
        prim.result, prim.result_source = 0x00, 0x01
        prim.presentation_context_definition_results_list = result
        prim.user_information = [ml, uid, ver, *ac_roles]
        pdu = A_ASSOCIATE_AC()
        pdu.from_primitive(prim)
        return pdu.encode()

    async def serve(self) -> None:
        """Sta6: P-DATA-TF until A-RELEASE-RQ (see the module docstring)."""
        self.server.established += 1  # no await since negotiate() checked the limit
        try:
            await self._transfer()
        finally:
            self.server.established -= 1

    async def _transfer(self) -> None:
        context = None  # the context of the message being received
        command: list = []
        dataset: list = []
        cmd = None
        while True:
            kind, body = await self._read_pdu()
            if kind == 0x05:
                if cmd is not None or command:
                    raise ProtocolError(UNEXPECTED_PDU, "A-RELEASE-RQ in the middle of a message")
                self.send(RELEASE_RP)
                await self._await_close()
                return
            if kind == 0x07:
                self.aborted = True
                return
            if kind in (0x01, 0x02, 0x03, 0x06):
                raise ProtocolError(UNEXPECTED_PDU, f"unexpected PDU type 0x{kind:02X} during data transfer")
            if kind != 0x04:
                raise ProtocolError(UNRECOGNISED_PDU, f"unrecognised PDU type 0x{kind:02X}")
            view, pos, end = memoryview(body), 0, len(body)
            if not end:
                raise ProtocolError(INVALID_PARAMETER, "P-DATA-TF without a presentation data value")
            while pos < end:
                if pos + 6 > end:
                    raise ProtocolError(INVALID_PARAMETER, "truncated presentation data value item")
                length, cid, mch = _PDV.unpack_from(body, pos)
                if length < 2 or pos + 4 + length > end:
                    raise ProtocolError(INVALID_PARAMETER, "invalid presentation data value item length")
                value = view[pos + 6:pos + 4 + length]
                pos += 4 + length
                if cid not in self.contexts or (context is not None and cid != context.id):
                    raise ProtocolError(INVALID_PARAMETER, "data on a presentation context not accepted or "
                                        "not the message's")
                context = self.contexts[cid]
                if mch & 0x01:  # command fragment
                    if cmd is not None:
                        raise ProtocolError(INVALID_PARAMETER, "command fragment after the command set")
                    command.append(value)
                    if mch & 0x02:
                        cmd = parse_command(b"".join(command))
                        command = []
                        if cmd.get(0x0800, NO_DATASET) == NO_DATASET:
                            await self._dispatch(context, cmd, None)
                            context, cmd = None, None
                else:  # data set fragment
                    if cmd is None:
                        raise ProtocolError(INVALID_PARAMETER, "data set fragment before its command set")
                    dataset.append(value)
                    if mch & 0x02:
                        data = b"".join(dataset)
                        dataset = []
                        await self._dispatch(context, cmd, data)
                        context, cmd = None, None

    async def _dispatch(self, context: Context, cmd: dict, data: bytes | None) -> None:
        field = cmd.get(0x0100)
        msg_id = cmd.get(0x0110, 0)
        sop_class = cmd.get(0x0002, context.abstract_syntax)
        if field == C_STORE_RQ:
            sop_uid = cmd.get(0x1000, "")
            if data is None or not sop_uid:
                status = STATUS_CANNOT_UNDERSTAND
                LOG.warning("C-STORE-RQ without a data set or SOP Instance UID (status 0x%04X)", status)
            elif sop_class != context.abstract_syntax:
                status = STATUS_SOP_CLASS_NOT_SUPPORTED
                LOG.warning("C-STORE-RQ SOP class differs from its presentation context (status 0x%04X)", status)
            else:
                status = await self.server.store(data, context.transfer_syntax, sop_class, sop_uid, self.stats)
            self.send_message(context.id, response_command(C_STORE_RSP, sop_class, msg_id, status, sop_uid or None))
        elif field == C_ECHO_RQ:
            self.send_message(context.id, response_command(C_ECHO_RSP, sop_class, msg_id, 0x0000, None))
        elif field == C_CANCEL_RQ:
            return
        else:
            raise ProtocolError(NOT_SPECIFIED, f"DIMSE command 0x{field or 0:04X} is not provided by this SCP")
        if self.writer.transport.get_write_buffer_size():  # the peer is slow to read: wait (flow control)
            await self._drain()

    async def _drain(self) -> None:
        """Wait while the peer does not read our responses, at most ``network_timeout``."""
        import asyncio

        try:
            async with asyncio.timeout(self.server.network_timeout):
                await self.writer.drain()
        except TimeoutError:
            self.aborted = True
            raise Closed("the peer does not read the responses") from None
        except OSError as err:
            raise Closed(f"connection lost ({type(err).__name__})") from None


class Acceptor:
    """The listening socket and every association, on one asyncio event loop in one thread.

    One thread for all associations: no lock hand-offs (with a thread per association, the
    interpreter lock passes between threads around every system call: ~80 futex calls per
    instance measured). Without fsync an instance is checked and written inline (no wait for
    the disk); with ``fsync`` the write runs on a thread pool so that several associations'
    flushes overlap.

    Args:
        service: the :class:`~biomarkers.intake.scp.StoreService` (allow-list, checks, spool, audit).
        ae_title: our AE title (the called AE title must equal it).
        max_pdu: the largest P-DATA-TF PDU we receive (bytes; 0: no limit).
        max_associations: associations at once; more are rejected (transient, local limit exceeded).
        network_timeout: seconds a peer may stay silent (association request, data, release).
        ssl_context: server-side TLS context or None.
        fsync: the spool flushes each instance (the store runs on a thread pool).
    """

    def __init__(self, service, ae_title: str, max_pdu: int = 4 * 1024 * 1024, max_associations: int = 8,
                 network_timeout: float = 60, ssl_context=None, fsync: bool = True):
        from .scp import build_ae

        self.service, self.ae_title = service, ae_title.strip()
        self.max_pdu, self.max_associations = int(max_pdu), int(max_associations)
        self.network_timeout, self.ssl_context, self.fsync = float(network_timeout), ssl_context, fsync
        self.supported_contexts = build_ae(ae_title).supported_contexts
        self.established = 0  # associations past negotiation (only the loop thread changes it)
        self._assocs: set[Association] = set()
        self._loop = None
        self._thread: threading.Thread | None = None
        self._pool = None

    def start(self, host: str, port: int) -> "Acceptor":
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        if self.fsync:
            self._pool = ThreadPoolExecutor(max_workers=self.max_associations, thread_name_prefix="scp-store")
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(asyncio.start_server(
                self._connected, host, port, ssl=self.ssl_context, backlog=64, reuse_address=True,
                ssl_handshake_timeout=self.network_timeout if self.ssl_context is not None else None))
        except BaseException:
            loop.close()
            raise
        self.server_address = self._server.sockets[0].getsockname()
        self._thread = threading.Thread(target=loop.run_forever, name="scp-loop", daemon=True)
        self._thread.start()
        return self

    async def _connected(self, reader, writer) -> None:
        assoc = Association(self, reader, writer)
        self._assocs.add(assoc)
        try:
            await assoc.run()
        finally:
            self._assocs.discard(assoc)

    async def store(self, data: bytes, transfer_syntax: str, sop_class: str, sop_uid: str, stats) -> int:
        """:meth:`StoreService.store_dataset` inline, or on the pool when each write is flushed."""
        if self._pool is None:
            return self.service.store_dataset(data, transfer_syntax, sop_class, sop_uid, stats)
        return await self._loop.run_in_executor(self._pool, self.service.store_dataset, data, transfer_syntax,
                                                sop_class, sop_uid, stats)

    async def _close(self, timeout: float) -> None:
        import asyncio

        self._server.close()
        for a in list(self._assocs):
            a.interrupt()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def shutdown(self, timeout: float = 30) -> None:
        """Stop accepting, abort the open associations, wait for them (an instance being stored
        finishes its durable write first)."""
        import asyncio

        loop = self._loop
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(timeout), loop).result(timeout + 5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout)
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            loop.close()
            self._loop = None
