"""The DICOM listener: a pynetdicom Application Entity running as association acceptor.

Each listening port is a :class:`GatewayAssociationServer` (pynetdicom's threaded server) run
in its own thread; every association gets a thread of its own (pynetdicom's model), whose
reactors wait on the socket instead of polling (``event_reactor``). The server
class adds what pynetdicom does not do: TCP_NODELAY on every accepted socket (without it a
DIMSE exchange of small PDUs waits on Nagle's algorithm and delayed ACKs, 40 ms at a time),
SO_REUSEPORT when several processes share the port, and a TLS handshake that happens in the
association's thread instead of blocking the accept loop.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pacs_common import audit_events
from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import ThreadedAssociationServer

from pacs_gateway.admission import (
    REASON_LOCAL_LIMIT,
    RESULT_REJECTED_PERMANENT,
    RESULT_REJECTED_TRANSIENT,
    SOURCE_PROVIDER_PRESENTATION,
    SOURCE_SERVICE_USER,
    AdmissionPolicy,
    AssociationRequest,
    Caller,
    Callers,
    Rejection,
)
from pacs_gateway.dimse.metrics import DicomMetrics
from pacs_gateway.event_reactor import TransportLimits, request_handler_class
from pacs_gateway.peer_limits import PeerLimits, Ticket
from pacs_gateway.user_identity import UserIdentityCheck

log = logging.getLogger(__name__)


def set_nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm on a TCP socket (no-op for other socket kinds)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class GatewayAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server with the gateway's socket options,
    associations whose reactors wait on the socket instead of polling (``event_reactor``),
    and bounded work per peer: the pod's connection limits checked at accept
    (:mod:`pacs_gateway.peer_limits`), the PDU and data set bounds and the ARTIM timeout
    applied to each association, and a socket timeout so a peer stalling in the middle of a
    PDU does not hold its thread forever."""

    def __init__(
        self,
        *args: Any,
        reuse_port: bool = False,
        peer_limits: PeerLimits | None = None,
        transport_limits: TransportLimits | None = None,
        artim_timeout: float | None = None,
        socket_timeout: float | None = None,
        on_refused: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self._reuse_port = reuse_port
        self.peer_limits = peer_limits
        self.transport_limits = transport_limits
        self.artim_timeout = artim_timeout
        self._socket_timeout = socket_timeout
        self._on_refused = on_refused
        self._tickets: dict[int, Ticket] = {}
        self._tickets_lock = threading.Lock()
        kwargs.setdefault("request_handler", request_handler_class())
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        """Bind, with SO_REUSEPORT when worker processes share the port."""
        if self._reuse_port and self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection: TCP_NODELAY first, then wrap in TLS without handshaking here.

        The handshake runs on first read in the association's own thread, so one slow or
        hostile TLS client cannot stall the accept loop.
        """
        assert self.socket is not None
        client, address = self.socket.accept()
        set_nodelay(client)
        if self._socket_timeout is not None:
            client.settimeout(self._socket_timeout)
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Admit a new connection within the pod's peer limits, else close it at once
        (socketserver closes a refused request without starting its thread)."""
        if self.peer_limits is None:
            return True
        address = str(client_address[0]) if isinstance(client_address, tuple) else "local"
        decision = self.peer_limits.admit_connection(address)
        if isinstance(decision, str):
            log.info("connection refused: %s", decision)
            if self._on_refused is not None:
                self._on_refused(decision)
            return False
        with self._tickets_lock:
            self._tickets[id(request)] = decision
        return True

    def take_ticket(self, request: Any) -> Ticket | None:
        """The peer-limits ticket of an accepted connection (for its association to release)."""
        with self._tickets_lock:
            return self._tickets.pop(id(request), None)

    def shutdown_request(self, request: Any) -> None:
        """Close a connection; one that never got an association gives its ticket back."""
        with self._tickets_lock:
            ticket = self._tickets.pop(id(request), None)
        if ticket is not None:
            ticket.release()
        super().shutdown_request(request)

    def shutdown(self) -> None:
        """Stop accepting and close the listening socket (pynetdicom's version also assumes the
        server was registered with the AE, which a custom server class is not)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def association_request_of(assoc: Any) -> AssociationRequest:
    """What the admission policy needs to know about a requesting association."""
    primitive = assoc.requestor.primitive
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    tls_subject: str | None = None
    is_tls = isinstance(sock, ssl.SSLSocket)
    if isinstance(sock, ssl.SSLSocket):
        certificate = sock.getpeercert()
        if certificate:
            tls_subject = _rfc4514(certificate.get("subject", ()))
    return AssociationRequest(
        calling_ae_title=str(primitive.calling_ae_title).strip(),
        called_ae_title=str(primitive.called_ae_title).strip(),
        address=str(assoc.requestor.address),
        tls_subject=tls_subject,
        tls=is_tls,
    )


def _rfc4514(subject: Any) -> str:
    """An ``ssl`` peer certificate subject as an RFC 4514 string (most specific first)."""
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "countryName": "C",
        "localityName": "L",
        "stateOrProvinceName": "ST",
    }
    parts = [f"{short.get(k, k)}={v}" for rdn in reversed(subject) for (k, v) in rdn]
    return ",".join(parts)


class DimseServer:
    """Owns the AE, its listening servers and the event handlers bound to them."""

    def __init__(
        self,
        ae_title: str,
        contexts: list[PresentationContext],
        admission: Callable[[], AdmissionPolicy],
        callers: Callers,
        handlers: list[tuple[Any, Callable[..., Any]]],
        *,
        user_identity: UserIdentityCheck | None = None,
        metrics: DicomMetrics,
        max_associations: int,
        max_pdu_size: int,
        network_timeout: float,
        acse_timeout: float,
        dimse_timeout: float,
        peer_limits: PeerLimits | None = None,
        transport_limits: TransportLimits | None = None,
        artim_timeout: float | None = None,
    ) -> None:
        self._server_options: dict[str, Any] = {
            "peer_limits": peer_limits,
            "transport_limits": transport_limits,
            "artim_timeout": artim_timeout,
            # Before its A-ASSOCIATE-RQ a peer may pause mid-PDU only as long as ARTIM allows;
            # once associated, as long as it may stay idle between PDUs (_on_requested).
            "socket_timeout": (artim_timeout or network_timeout)
            if transport_limits is not None
            else None,
            "on_refused": lambda reason: metrics.rejected("connection_limit"),
        }
        self.ae = AE(ae_title=ae_title)
        # With peer limits, max_associations counts admitted associations (PeerLimits);
        # pynetdicom's own check counts every connection, pending ones included.
        self.ae.maximum_associations = (
            max_associations if peer_limits is None else max(max_associations, 1 << 20)
        )
        self.ae.maximum_pdu_size = max_pdu_size
        self.ae.network_timeout = network_timeout
        self.ae.acse_timeout = acse_timeout
        self.ae.dimse_timeout = dimse_timeout
        self._contexts = contexts
        self._admission = admission
        self._callers = callers
        self._metrics = metrics
        self._user_identity = user_identity
        self._handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            *([(evt.EVT_USER_ID, user_identity.handle)] if user_identity else []),
            *metrics.handlers(),
            *handlers,
        ]
        self._servers: list[GatewayAssociationServer] = []
        self._threads: list[threading.Thread] = []

    def listen(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> int:
        """Start serving on ``host:port`` in a thread of its own; returns the bound port."""
        server = self.ae.make_server(  # returns server_class's instance
            (host, port),
            contexts=self._contexts,
            ssl_context=ssl_context,
            evt_handlers=self._handlers,
            server_class=GatewayAssociationServer,
            reuse_port=reuse_port,
            **self._server_options,
        )
        assert isinstance(server, GatewayAssociationServer)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            daemon=True,
            name=f"dimse-accept-{port}",
        )
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)
        return int(server.server_address[1])

    def _on_requested(self, event: Any) -> None:
        """EVT_REQUESTED: admit or reject the caller before any negotiation (PS3.8 7.1.1)."""
        assoc = event.assoc
        ticket = getattr(assoc, "peer_ticket", None)
        sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
        if ticket is not None and sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(self.ae.network_timeout)  # associated: the idle bound now
        if ticket is not None and not ticket.associate():
            # PS3.8 Table 9-21: rejected-transient, service-provider (presentation), local
            # limit exceeded: the pod has as many associations as it may (a sender retries).
            self._metrics.rejected("association_limit")
            assoc.acse.send_reject(
                RESULT_REJECTED_TRANSIENT, SOURCE_PROVIDER_PRESENTATION, REASON_LOCAL_LIMIT
            )
            assoc.kill()
            return
        try:
            request = association_request_of(assoc)
            decision: Caller | Rejection = self._admission().admit(request)
        except Exception:
            log.exception("admission check failed; rejecting the association")
            decision = Rejection(0x01, "admission check failed")
            request = None
        if (
            isinstance(decision, Caller)
            and self._user_identity
            and self._user_identity.missing(assoc)
        ):
            decision = Rejection(0x01, "a DICOM user identity (JWT) is required", "user_identity")
        if isinstance(decision, Caller):
            self._callers.set(assoc, decision)
            return
        log.info(
            "association rejected",
            extra={
                "calling_ae_title": request.calling_ae_title if request else None,
                "address": request.address if request else None,
                "reason": decision.explanation,
            },
        )
        self._metrics.rejected(decision.kind)
        audit_events.emit(
            audit_events.association_refused(self.ae.ae_title, request, decision.explanation)
        )
        assoc.acse.send_reject(RESULT_REJECTED_PERMANENT, SOURCE_SERVICE_USER, decision.reason)
        assoc.kill()

    def active_associations(self) -> int:
        """Number of associations currently open on any of our ports."""
        return sum(len(server.active_associations) for server in self._servers)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, give open associations ``grace_s`` to finish, abort the rest."""
        for server in self._servers:
            server.shutdown()
        associations = [a for server in self._servers for a in server.active_associations]
        for assoc in associations:
            assoc.join(timeout=grace_s / max(len(associations), 1))
            if assoc.is_alive():
                assoc.abort()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()
