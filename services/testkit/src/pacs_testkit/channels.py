"""gRPC channels of a test acting as a local client (mutual TLS, as ``cli`` by default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from pacs_common.local import client_tls, sync_channel
from pacs_common.tls import TlsSettings

__all__ = ["client_tls", "plain_aio_channel", "sync_channel"]


def plain_aio_channel(
    target: str, tls: TlsSettings | None = None, interceptors: Sequence[Any] = ()
) -> grpc.aio.Channel:
    """An async channel with mutual TLS (as ``cli`` unless ``tls`` says) and grpcio's own
    defaults: no retry policy, unlike :func:`pacs_common.grpc_client.open_channel`, for tests
    that must see every attempt's own outcome. ``interceptors``: for example a bearer token's."""
    return grpc.aio.secure_channel(
        target, (tls or client_tls()).channel_credentials(), interceptors=list(interceptors)
    )
