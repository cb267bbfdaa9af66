"""gRPC channels to other cloudpacs services."""

from __future__ import annotations

import grpc

from pacs_common.telemetry import client_interceptors

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


def open_channel(target: str) -> grpc.aio.Channel:
    """Open an async channel to ``target`` (host:port) with cloudpacs' defaults."""
    return grpc.aio.insecure_channel(
        target,
        interceptors=client_interceptors(),
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ],
    )
