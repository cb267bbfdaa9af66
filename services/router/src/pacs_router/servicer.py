"""RouterService: the state of each destination's queue and sender.

``Status`` needs the role ``admin``. A caller sees the destinations its tenant's rules send to
(destinations are shared by tenants, the queue of one may hold other tenants' instances: the
counts are the destination's); a trusted internal service sees every destination.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import grpc
from pacs.router.v1 import router_service_pb2 as pb
from pacs.router.v1 import router_service_pb2_grpc as pb_grpc
from pacs_common.auth import AuthorizationInterceptor, AuthSettings, Role, caller_of
from pacs_common.consumer_lag import ConsumerLagProbe

from pacs_router.enqueue import route_topic
from pacs_router.rules import RulesFile
from pacs_router.sender import SenderState

_Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = pb.DESCRIPTOR.services_by_name["RouterService"].full_name
ROLES = {"Status": Role.ADMIN}
"""The role each RouterService method needs."""


def authorization(settings: AuthSettings) -> AuthorizationInterceptor:
    """The interceptor that authenticates RouterService callers and checks :data:`ROLES`."""
    return AuthorizationInterceptor(settings, {SERVICE: ROLES})


class RouterServicer(pb_grpc.RouterServiceServicer):
    """Answers Status from the senders' counters and Kafka's consumer lag."""

    def __init__(
        self,
        rules: RulesFile,
        probe: ConsumerLagProbe,
        states: Mapping[str, SenderState],
        topic_prefix: str,
        group_prefix: str,
    ) -> None:
        self.rules = rules
        self.probe = probe
        self.states = states
        self.topic_prefix = topic_prefix
        self.group_prefix = group_prefix

    def visible_to(self, tenant: str | None) -> list[str]:
        """Destination names a caller of ``tenant`` may see (None: every one)."""
        if tenant is None:
            return sorted(self.rules.destinations)
        names = {d for rule in self.rules.tenants.get(tenant, []) for d in rule.destinations}
        return sorted(names)

    async def queued(self, name: str) -> int:
        """Instances waiting in one destination's queue."""
        return await self.probe.lag(self.group_prefix + name, route_topic(self.topic_prefix, name))

    async def Status(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.StatusRequest, context: _Context
    ) -> pb.StatusResponse:
        caller = caller_of(context)
        names = self.visible_to(None if caller.trusted_service else caller.tenant)
        queued = await asyncio.gather(*(self.queued(name) for name in names))
        response = pb.StatusResponse()
        for name, waiting in zip(names, queued, strict=True):
            destination = self.rules.destinations[name]
            state = self.states.get(name, SenderState())
            response.destinations.append(
                pb.DestinationStatus(
                    name=name,
                    kind=destination.kind,
                    address=destination.address,
                    queued=waiting,
                    sent=state.sent,
                    failed=state.failed,
                    retries=state.retries,
                    last_error=state.last_error,
                    last_error_time=state.last_error_time,
                    last_success_time=state.last_success_time,
                )
            )
        return response
