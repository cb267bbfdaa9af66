"""An async client of the router's ``RouterService``.

Usage::

    router = RouterClient(open_channel(target, tls), timeout=60)
    destinations = await router.status()

Failures raise the project's errors (:mod:`pacs_common.clients.errors`).
"""

from __future__ import annotations

import grpc
from pacs.router.v1 import router_service_pb2 as pb
from pacs.router.v1 import router_service_pb2_grpc as pb_grpc

from pacs_common.clients.errors import translated

SERVICE = "router"


class RouterClient:
    """Typed helpers over the generated stub; one instance per channel, safe to share."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float | None = None) -> None:
        self.stub = pb_grpc.RouterServiceStub(channel)
        self.timeout = timeout

    async def status(self) -> list[pb.DestinationStatus]:
        """Every destination the caller may see, by name."""
        with translated(SERVICE):
            response: pb.StatusResponse = await self.stub.Status(
                pb.StatusRequest(), timeout=self.timeout
            )
        return list(response.destinations)
