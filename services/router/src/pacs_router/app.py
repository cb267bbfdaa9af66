"""The router process: the rules consumer, one sender per destination, prefetch, and
RouterService.Status.

Start-up reads and validates the rules file first: an invalid file stops the process with a
message naming the file and the field, before anything connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pacs.router.v1 import router_service_pb2_grpc as pb_grpc
from pacs_common.clients.direct import DirectStorage
from pacs_common.clients.storage import StorageClient
from pacs_common.consumer_lag import ConsumerLagProbe
from pacs_common.errors import PacsError
from pacs_common.events import TOPIC_INSTANCES, TOPIC_WORKFLOW, EventConsumer, EventPublisher
from pacs_common.grpc_client import open_channel
from pacs_common.hosted_app import HostedApp
from pacs_common.metrics import ROUTE_QUEUED
from pacs_common.service_host import ServiceHost, StopStage, configure_process

from pacs_router.enqueue import RouteEnqueuer, route_topic
from pacs_router.prefetch import Prefetcher
from pacs_router.rules import load_rules
from pacs_router.sender import DestinationSender
from pacs_router.servicer import SERVICE, RouterServicer, authorization
from pacs_router.settings import RouterSettings

log = logging.getLogger(__name__)


class RouterApp(HostedApp):
    """One running router: create with :func:`create_app`, then ``start()`` / ``stop()``."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.rules = load_rules(settings.rules_file)
        self._channel = open_channel(settings.storage_target, settings.grpc_tls)
        self.storage = StorageClient(self._channel, timeout=settings.storage_timeout_s)
        self.direct = DirectStorage(self.storage, ca_certs=settings.s3_ca_bundle)
        self.probe = ConsumerLagProbe(settings.kafka)
        self.senders = {
            name: DestinationSender(
                name,
                destination,
                self.direct,
                calling_ae=settings.ae_title,
                timeout_s=settings.dimse_timeout_s,
                max_retries=settings.kafka.max_retries,
            )
            for name, destination in self.rules.destinations.items()
        }
        self.servicer = RouterServicer(
            self.rules,
            self.probe,
            {name: sender.state for name, sender in self.senders.items()},
            settings.topic_prefix,
            settings.sender_group_prefix,
        )
        self._publisher: EventPublisher | None = None
        self.consumer: EventConsumer | None = None
        self.sender_consumers: dict[str, EventConsumer] = {}
        self.prefetch_consumer: EventConsumer | None = None
        self.prefetcher: Prefetcher | None = None
        self._gauges: asyncio.Task[None] | None = None
        self.host = ServiceHost(
            settings,
            [SERVICE],
            lambda server: pb_grpc.add_RouterServiceServicer_to_server(self.servicer, server),
            interceptors=[authorization(settings.auth)],
        )
        host = self.host
        host.on_stop("gauges", self._stop_gauges, StopStage.CONSUMERS)
        host.on_stop("consumers", self._stop_consumers, StopStage.CONSUMERS)
        host.on_stop("publisher", self._stop_publisher, StopStage.PRODUCERS)
        host.on_stop("resources", self._close, StopStage.RESOURCES)

    async def _start(self) -> None:
        await self.probe.start()
        if self.settings.consume_events:
            self._publisher = EventPublisher(self.settings.kafka, source="router")
            await self._publisher.start()
            for name, sender in self.senders.items():
                consumer = EventConsumer(
                    self.settings.kafka,
                    self.settings.sender_group_prefix + name,
                    [route_topic(self.settings.topic_prefix, name)],
                    sender.handle,
                    self._publisher,
                )
                self.sender_consumers[name] = consumer
                await consumer.start()
            enqueuer = RouteEnqueuer(
                self.rules, self.storage, self._publisher, self.settings.topic_prefix
            )
            self.consumer = EventConsumer(
                self.settings.kafka,
                self.settings.consumer_group,
                [TOPIC_INSTANCES],
                enqueuer.handle,
                self._publisher,
            )
            await self.consumer.start()
            if self.rules.prefetch:
                self.prefetcher = Prefetcher(
                    self.rules.prefetch, self.settings.ae_title, self.settings.dimse_timeout_s
                )
                self.prefetch_consumer = EventConsumer(
                    self.settings.kafka,
                    self.settings.prefetch_group,
                    [TOPIC_WORKFLOW],
                    self.prefetcher.handle,
                    self._publisher,
                )
                await self.prefetch_consumer.start()
        self._gauges = asyncio.create_task(self._refresh_gauges(), name="route-gauges")
        await self.host.start_audit(self.settings.kafka, self.settings.audit)
        await self.host.start()
        log.info(
            "router started",
            extra={"grpc_port": self.grpc_port, "destinations": sorted(self.senders)},
        )

    async def _refresh_gauges(self) -> None:
        """Keep ``pacs_route_queued`` current (Kafka's view of each queue), and release
        associations left idle."""
        while True:
            for sender in self.senders.values():
                await sender.release_idle(self.settings.association_idle_s)
            for name in self.senders:
                try:
                    ROUTE_QUEUED.labels(name).set(await self.servicer.queued(name))
                except PacsError as exc:
                    log.debug("queue depth not refreshed", extra={"error": repr(exc)})
            await asyncio.sleep(
                min(self.settings.status_interval_s, self.settings.association_idle_s)
            )

    async def _stop_gauges(self) -> None:
        if self._gauges is not None:
            self._gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauges

    async def _stop_consumers(self) -> None:
        consumers = [self.consumer, self.prefetch_consumer, *self.sender_consumers.values()]
        await asyncio.gather(*(c.stop() for c in consumers if c is not None))

    async def _stop_publisher(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()

    async def _close(self) -> None:
        await self.probe.stop()
        for sender in self.senders.values():
            sender.close()
        self.direct.close()
        await self._channel.close(grace=None)


def create_app(settings: RouterSettings) -> RouterApp:
    """Build a router from its settings (nothing is started yet).

    Raises:
        RulesFileError: the rules file is missing or invalid.
    """
    return RouterApp(settings)


async def serve() -> None:
    """Run the router with settings from the environment until SIGTERM."""
    settings = RouterSettings.load()
    configure_process(settings)
    app = create_app(settings)
    await app.start()
    await app.host.run_until_signalled()
