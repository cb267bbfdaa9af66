"""pynetdicom's association reactors, waiting on the socket instead of polling every millisecond.

Why: pynetdicom 3.0 runs two threads per association that poll. The DUL reactor
(``DULServiceProvider.run_reactor``) sleeps ``_run_loop_delay`` (1 ms) whenever it found nothing
to do, then checks its queues and ``select``s the socket with a zero timeout; the association
reactor (``Association._run_reactor``) sleeps 1 ms between looks at the DIMSE message queue.
Each idle association thus wakes about 2 000 times a second, every PDU waits up to 1 ms in each
thread, and the wake-ups compete for the GIL with the work (measured with a no-op C-STORE SCP:
see docs/performance.md). pynetdicom's own comment says "TODO: try and make this event based".

What: the same loops, doing the same checks in the same order, but blocking where they slept:

* :class:`EventDUL` blocks in ``select`` on the association's socket plus one end of a
  ``socket.socketpair``. The other end is written whenever another thread queues something for
  the DUL (``to_provider_queue``: PDUs to send, A-RELEASE/A-ABORT; ``event_queue``) or stops it
  (``_kill_thread``). The wait is bounded by the ARTIM timer's deadline, so ARTIM expiry is
  handled on time.
* :class:`EventAssociation` blocks on a ``threading.Event`` set whenever a DIMSE message is
  complete (``dimse.msg_queue``), the DUL hands the user a primitive (``to_user_queue``: peer
  release or abort), the association is killed (``_kill``), or its DUL thread ends. The wait
  is bounded by the network (idle) timer's deadline, so the network timeout aborts on time.

Both waits are also capped at :data:`MAX_WAIT_S`, so an unforeseen missed wake-up costs a delay,
never a hang. The association counts as paused (``_is_paused``) while it waits, so a ``send_*``
method called from another thread (a Storage Commitment report on the same association)
proceeds at once instead of spinning until the reactor comes round.

Internals relied on (pynetdicom pinned to :data:`PYNETDICOM_VERSION`; the contract test
``tests/test_gateway_reactor_contract.py`` fingerprints each of them and fails if one changes):

* ``DULServiceProvider``: ``__init__`` (attributes ``socket``, ``event_queue``,
  ``to_provider_queue``, ``to_user_queue``, ``artim_timer``, ``_idle_timer``, ``_kill_thread``,
  the thread target ``run_reactor``), ``run_reactor`` (replaced: :meth:`EventDUL.run_reactor`
  is the same loop), ``_process_recv_primitive``, ``_is_transport_event``, ``kill_dul``,
  ``stop_dul``, ``send_pdu``, ``_read_pdu_data`` (replaced when limits are set:
  :meth:`EventDUL._read_pdu_data` is the same reads and events with the length checked first),
  ``_decode_pdu``, ``_recv_pdu``.
* ``Association``: ``__init__`` (creates ``dul`` then sets the timeouts through setters that
  write to ``dul``'s timers; attributes ``_kill``, ``_is_paused``, ``_reactor_checkpoint``,
  ``_dul_ready``), ``_run_reactor`` (replaced: :meth:`EventAssociation._run_reactor`),
  ``run_reactor``, ``kill``, ``_serve_request``.
* ``AssociationSocket``: ``socket``, ``_is_connected``, ``ready``, ``recv``, ``close``;
  ``DIMSEServiceProvider``: ``msg_queue``; ``Timer``: ``start``, ``stop``, ``remaining``,
  ``expired``.
* ``RequestHandler._create_association`` (copied: :meth:`EventRequestHandler._create_association`
  is the same but builds an :class:`EventAssociation`).

If the installed pynetdicom is not :data:`PYNETDICOM_VERSION`, :func:`request_handler_class`
returns pynetdicom's own handler: the gateway keeps working, polling, and logs why.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

import pynetdicom
from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.timer import Timer
from pynetdicom.transport import AssociationSocket, RequestHandler

log = logging.getLogger(__name__)
_pynetdicom_log = logging.getLogger("pynetdicom.association")  # its messages, as it logs them

PYNETDICOM_VERSION = "3.0.4"
"""The pynetdicom release whose internals this module was written against (and pinned to)."""

MAX_WAIT_S = 1.0
"""Longest a reactor blocks without a wake-up (a safety net: every event that needs the reactor
wakes it, and the timers bound the wait)."""

_T = TypeVar("_T")


class _WakingQueue(queue.Queue[_T]):
    """A queue that calls ``wake`` after every ``put`` (``put_nowait`` goes through ``put``)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class _ArtimTimer(Timer):
    """pynetdicom's timer, also telling whether it is running (for the DUL's wait bound)."""

    def __init__(self, timeout: float | None) -> None:
        super().__init__(timeout)
        self.running = False

    def start(self) -> None:
        super().start()
        self.running = True

    def stop(self) -> None:
        super().stop()
        self.running = False


PDU_TYPES = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07)
"""PS3.8 9.3.1: A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE-RQ/RP, A-ABORT."""
P_DATA_TF = 0x04
MAX_CONTROL_PDU_LENGTH = 256 * 1024
"""Longest PDU other than P-DATA-TF we read. An A-ASSOCIATE-RQ with 128 presentation contexts
of a few transfer syntaxes each and a JWT user identity stays far below; release and abort
PDUs are 4 bytes (PS3.8 9.3.6-9.3.8)."""
ABORT_INVALID_PARAMETER = 0x06
"""A-ABORT reason: invalid-PDU-parameter value (PS3.8 Table 9-26, source 2)."""


@dataclass(frozen=True)
class TransportLimits:
    """Bounds the DUL enforces on what a peer sends, before reading it.

    ``max_pdu_length`` bounds a P-DATA-TF PDU's length field (we announce it as our Maximum
    Length Received, PS3.8 D.1, so a conforming peer never exceeds it); ``max_dataset_bytes``
    bounds the data set fragments of one DIMSE message (PS3.8 9.3.5.1: fragments of a data
    set until the one marked last).
    """

    max_pdu_length: int
    max_dataset_bytes: int


class EventDUL(DULServiceProvider):
    """The DICOM Upper Layer provider, blocking on its socket and a wake-up socket pair, and
    bounding what a peer may send (:class:`TransportLimits`)."""

    limits: TransportLimits | None = None
    """Set by the request handler; None: pynetdicom's unbounded reads."""

    def __init__(self, assoc: Association) -> None:
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._dataset_bytes = 0
        super().__init__(assoc)
        self.event_queue = _WakingQueue(self._wake)
        self.to_provider_queue = _WakingQueue(self._wake)
        self.to_user_queue = _WakingQueue(self._wake_association)
        self.artim_timer = _ArtimTimer(self.artim_timer.timeout)

    @property  # an attribute in pynetdicom; a property here, because setting it must wake us
    def _kill_thread(self) -> bool:
        return bool(self.__dict__.get("_kill_flag", False))

    @_kill_thread.setter
    def _kill_thread(self, value: bool) -> None:
        self.__dict__["_kill_flag"] = value
        if value:
            self._wake()

    def _wake(self) -> None:
        """Wake the reactor if another thread is calling (its own puts are seen anyway)."""
        writer = self._wake_w
        if writer is None or threading.get_ident() == self.ident:
            return
        # OSError: full (a wake-up is already pending) or closed (the reactor is gone)
        with contextlib.suppress(OSError):
            writer.send(b"\0")

    def _wake_association(self) -> None:
        wake = getattr(self.assoc, "wake", None)
        if wake is not None:
            wake()

    def _wait(self) -> None:
        """Block until the socket is readable, another thread wakes us, or ARTIM expires."""
        assert self._wake_r is not None
        timeout = MAX_WAIT_S
        if isinstance(self.artim_timer, _ArtimTimer) and self.artim_timer.running:
            timeout = min(timeout, max(0.0, self.artim_timer.remaining))
        watched: list[Any] = [self._wake_r]
        wrapper = self.socket
        sock = wrapper.socket if wrapper is not None else None
        if sock is not None and wrapper is not None and wrapper._is_connected:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return  # decrypted bytes already buffered: select would not see them
            watched.append(sock)
        # OSError, ValueError: the socket was closed meanwhile; the loop's own check (pynetdicom's
        # ``ready``) reports it as a closed connection.
        with contextlib.suppress(OSError, ValueError):
            select.select(watched, [], [], timeout)
        with contextlib.suppress(OSError):  # BlockingIOError: drained
            while self._wake_r.recv(4096):
                pass

    def run_reactor(self) -> None:
        """pynetdicom's DUL loop (same checks, same order), waiting instead of sleeping."""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        try:
            self._loop()
        finally:
            self._wake_w.close()
            self._wake_r.close()
            self._wake_association()

    def _loop(self) -> None:
        self._idle_timer.start()
        self.socket = cast(AssociationSocket, self.socket)
        self.assoc._dul_ready.set()
        idle = False
        while True:
            if idle:
                self._wait()
            if self._kill_thread:
                break
            # ARTIM first, so its event is queued ahead of any other this pass
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # either encode and send one primitive or receive and decode one PDU per pass
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                log.exception("exception in the DUL reactor, aborting the association")
                self._abort_hard()
                return
            if self._kill_thread:
                break  # _refuse ended the association: no need to wait for a wake-up
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False

    def _read_pdu_data(self) -> None:
        """pynetdicom's ``_read_pdu_data`` with the PDU length checked as the header arrives.

        A PDU longer than :class:`TransportLimits` allows, or a P-DATA-TF that takes a DIMSE
        message's data set past its bound, ends the association with an A-ABORT before its
        body is read: nothing beyond the 6-byte header is buffered (PS3.8 9.3.1 gives the
        length; what an acceptor does with one it cannot take is ours to decide, and an abort
        is what the state machine does for any invalid PDU, AA-8).
        """
        limits = self.limits
        if limits is None:
            super()._read_pdu_data()
            return
        received = self._receive(limits)
        if received is None:
            return  # refused: aborted and closed
        if isinstance(received, str):
            self.event_queue.put(received)
            return
        try:
            pdu, event = self._decode_pdu(received)
        except Exception:
            log.info("undecodable PDU from a peer")
            self.event_queue.put("Evt19")  # READ_PDU_EXC_F
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _receive(self, limits: TransportLimits) -> bytearray | str | None:
        """One whole PDU within the limits; else the state machine event to queue (Evt17
        transport closed, Evt19 unrecognised PDU, as pynetdicom's READ_PDU_EXC_A-E), or None
        when the PDU was refused (:meth:`_refuse`)."""
        sock = cast(AssociationSocket, self.socket)
        header = self._recv_exactly(sock, 6)
        if header is None:
            return "Evt17"
        pdu_type, _, pdu_length = struct.unpack(">BBL", header)
        if pdu_type not in PDU_TYPES:
            return "Evt19"
        bound = limits.max_pdu_length if pdu_type == P_DATA_TF else MAX_CONTROL_PDU_LENGTH
        if pdu_length > bound:
            self._refuse("PDU length beyond the limit")
            return None
        body = self._recv_exactly(sock, pdu_length)
        if body is None:
            return "Evt17"
        if pdu_type == P_DATA_TF and not self._dataset_within(bytes(body), limits):
            self._refuse("data set beyond the limit")
            return None
        return header + body

    @staticmethod
    def _recv_exactly(sock: AssociationSocket, length: int) -> bytearray | None:
        """``length`` bytes, or None if the connection closed, failed or stalled past the
        socket timeout first."""
        try:
            data = sock.recv(length)
        except (OSError, TimeoutError):
            return None
        return data if len(data) == length else None

    def _dataset_within(self, body: bytes, limits: TransportLimits) -> bool:
        """Add the data set fragments of a P-DATA-TF body (PS3.8 9.3.5.1, E.2) to the current
        message's count; False once it passes ``max_dataset_bytes``. Malformed items are left
        for pynetdicom's decoder to refuse."""
        offset = 0
        while offset + 6 <= len(body):
            (item_length,) = struct.unpack_from(">L", body, offset)
            control = body[offset + 5]
            if not control & 0x01:  # a data set fragment, not a command one
                self._dataset_bytes += max(item_length - 2, 0)
                if self._dataset_bytes > limits.max_dataset_bytes:
                    return False
                if control & 0x02:  # the last fragment of this data set
                    self._dataset_bytes = 0
            offset += 4 + item_length
        return True

    def _refuse(self, why: str) -> None:
        """A-ABORT (source: service provider, invalid PDU parameter) and close at once."""
        log.warning("aborting an association: %s", why)
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = ABORT_INVALID_PARAMETER
        sock = cast(AssociationSocket, self.socket)
        with contextlib.suppress(OSError):
            sock.send(abort_pdu.encode())
        was_established = self.assoc.is_established
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        if was_established:  # as for any abort: handlers (metrics) see the association end
            evt.trigger(self.assoc, evt.EVT_ABORTED, {})
        sock.close()
        self.assoc._kill = True
        self._kill_thread = True

    def _abort_hard(self) -> None:
        """As pynetdicom does: bypass the state machine, send A-ABORT, stop both reactors."""
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        cast(AssociationSocket, self.socket).send(abort_pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class EventAssociation(Association):
    """An association whose reactor thread waits for work instead of polling."""

    def __init__(self, ae: Any, mode: str) -> None:
        self._work = threading.Event()
        super().__init__(ae, mode)
        # pynetdicom built a polling DUL; replace it before anything started or used it, and
        # pass the timeouts its setters had written to the old DUL's timers.
        self.dul = EventDUL(self)
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout
        self.dimse.msg_queue = _WakingQueue(self.wake)

    @property  # an attribute in pynetdicom; a property here, because setting it must wake us
    def _kill(self) -> bool:
        return bool(self.__dict__.get("_kill_flag", False))

    @_kill.setter
    def _kill(self, value: bool) -> None:
        self.__dict__["_kill_flag"] = value
        if value:
            self.wake()

    peer_ticket: Any = None
    """This connection's place in the pod's peer limits (a ``peer_limits.Ticket``), if any."""
    on_end: Callable[[], None] | None = None
    """Called once when the association's thread ends, however it ends (the peer limits'
    :meth:`~pacs_gateway.peer_limits.Ticket.release`)."""

    def run(self) -> None:
        """The thread's body (pynetdicom's ``run_reactor``), then :attr:`on_end`."""
        try:
            super().run()
        finally:
            if self.on_end is not None:
                self.on_end()

    def wake(self) -> None:
        """Make the reactor look at its queues, flags and timers now."""
        work = self.__dict__.get("_work")
        if work is not None:
            work.set()

    def _wait(self) -> None:
        """Block until woken, the network timeout is due, or the DUL thread has ended."""
        timeout = MAX_WAIT_S
        if self.network_timeout is not None:
            timeout = min(timeout, max(0.0, self.dul._idle_timer.remaining))
        if self.dul._kill_thread or not self.dul.is_alive():
            self.dul.join(timeout)  # the DUL is stopping: is_alive() turns False at its end
        else:
            self._work.wait(timeout)

    def _run_reactor(self) -> None:
        """pynetdicom's association loop (same checks, same order), waiting instead of
        sleeping. The reactor counts as paused while it waits, so ``send_*`` need not spin."""
        self._is_paused = False
        idle = False
        while not self._kill:
            self._is_paused = True
            if idle:
                self._wait()
            self._reactor_checkpoint.wait()
            self._is_paused = False
            self._work.clear()  # before looking: anything arriving from now on wakes us again

            context_id, msg = self.dimse.get_msg(block=False)
            idle = not msg
            if msg:
                self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                _pynetdicom_log.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                message = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    message += " (A-P-ABORT)"
                _pynetdicom_log.info(message)
                self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                _pynetdicom_log.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class EventRequestHandler(RequestHandler):
    """pynetdicom's request handler, building an :class:`EventAssociation` per connection."""

    def _create_association(self) -> Association:
        """pynetdicom's ``RequestHandler._create_association`` with one change: the class."""
        assoc = EventAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        timestamp = datetime.strftime(datetime.now(), "%Y%m%d%H%M%S")
        # AssociationServer.active_associations finds associations by this thread name
        assoc.name = f"AcceptorThread@{timestamp}"
        sock = AssociationSocket(assoc, client_socket=cast(socket.socket, self.request))
        assoc.set_socket(sock)

        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)
        assoc.requestor.address_info = self.remote
        self._bound(assoc)

        handlers: dict[Any, Any] = self.server._handlers
        for event, bound in handlers.items():
            if event.is_intervention and bound:
                assoc.bind(event, *bound)
            elif isinstance(event, evt.NotificationEvent):
                for handler in bound:
                    assoc.bind(event, handler[0], handler[1])
        return assoc

    def _bound(self, assoc: EventAssociation) -> None:
        """Apply the server's transport limits, ARTIM timeout and peer ticket (if it has them)
        to a new association."""
        limits = getattr(self.server, "transport_limits", None)
        if isinstance(assoc.dul, EventDUL) and limits is not None:
            assoc.dul.limits = limits
        artim = getattr(self.server, "artim_timeout", None)
        if artim is not None:
            # The acceptor's ACSE timeout is the wait for the A-ASSOCIATE-RQ; pynetdicom also
            # starts the DUL's ARTIM timer with it on connection (PS3.8 9.1.5, AE-5).
            assoc.acse_timeout = min(assoc.acse_timeout or artim, artim)
        take_ticket = getattr(self.server, "take_ticket", None)
        if take_ticket is not None:
            ticket = take_ticket(self.request)
            if ticket is not None:
                assoc.peer_ticket = ticket
                assoc.on_end = ticket.release


def request_handler_class() -> type[RequestHandler]:
    """The request handler for the gateway's association servers: the event-driven one when
    the installed pynetdicom is the one it was written for, else pynetdicom's own."""
    if pynetdicom.__version__ == PYNETDICOM_VERSION:
        return EventRequestHandler
    log.warning(
        "pynetdicom %s is not %s: using its polling reactors (see pacs_gateway.event_reactor)",
        pynetdicom.__version__,
        PYNETDICOM_VERSION,
    )
    return RequestHandler
