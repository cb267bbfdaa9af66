"""gRPC channels to other cloudpacs services, mutual TLS by default (:mod:`pacs_common.tls`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from pacs_common.telemetry import client_interceptors
from pacs_common.tls import TlsSettings

# Retry UNAVAILABLE briefly inside the channel (service restarts, rolling updates); callers see
# UNAVAILABLE only when the peer stays down.
_SERVICE_CONFIG = """{
  "methodConfig": [{
    "name": [{}],
    "retryPolicy": {
      "maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s",
      "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}"""


_OPTIONS = [
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]


def open_channel(
    target: str,
    tls: TlsSettings | grpc.ChannelCredentials,
    interceptors: Sequence[Any] = (),
) -> grpc.aio.Channel:
    """Open an async channel to ``target`` (host:port) with cloudpacs' defaults.

    Args:
        target: host:port of the service; the host must be a name in its certificate.
        tls: the caller's TLS settings (its identity's certificate is presented to the
            server), or ready credentials. Plaintext only with ``TlsSettings(enabled=False)``.
        interceptors: further client interceptors, after tracing (for example the bearer
            token of :func:`pacs_common.oauth_client.bearer_interceptors`).

    Raises:
        TlsConfigError: the caller's certificate files are missing.
    """
    chain = [*client_interceptors(), *interceptors]
    if isinstance(tls, TlsSettings):
        if not tls.enabled:
            return grpc.aio.insecure_channel(target, interceptors=chain, options=_OPTIONS)
        credentials = tls.channel_credentials()
    else:
        credentials = tls
    return grpc.aio.secure_channel(target, credentials, interceptors=chain, options=_OPTIONS)
