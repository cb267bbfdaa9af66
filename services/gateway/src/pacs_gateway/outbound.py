"""Associations the gateway opens itself (C-MOVE destinations, Storage Commitment reports).

Every outgoing socket gets TCP_NODELAY as soon as it is connected (pynetdicom's EVT_CONN_OPEN),
for the same reason as accepted sockets; TLS destinations get a TLS 1.2+ client context that
verifies the peer against the registry's CA bundle.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from pynetdicom import evt

from pacs_gateway.dimse_server import set_nodelay
from pacs_gateway.registry import Destination


def _nodelay_on_connect(event: Any) -> None:
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket is not None else None
    if sock is not None:
        set_nodelay(sock)


def client_ssl_context(destination: Destination) -> ssl.SSLContext:
    """A TLS client context for ``destination`` (TLS 1.2 or newer, peer verified)."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(destination.tls_ca_file) if destination.tls_ca_file else None,
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if destination.tls_cert_file:
        context.load_cert_chain(
            str(destination.tls_cert_file),
            str(destination.tls_key_file) if destination.tls_key_file else None,
        )
    return context


def association_kwargs(
    destination: Destination,
    contexts: list[Any],
    on_accepted: Callable[[Any], None] | None = None,
    max_pdu: int = 0,
) -> dict[str, Any]:
    """Keyword arguments of ``AE.associate`` (also what a C-MOVE handler yields) for one
    destination: contexts, TLS, TCP_NODELAY, and an optional EVT_ACCEPTED callback."""
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, _nodelay_on_connect)]
    if on_accepted is not None:
        handlers.append((evt.EVT_ACCEPTED, on_accepted))
    kwargs: dict[str, Any] = {
        "contexts": contexts,
        "evt_handlers": handlers,
        "max_pdu": max_pdu,
    }
    if destination.tls:
        kwargs["tls_args"] = (client_ssl_context(destination), destination.host)
    return kwargs
