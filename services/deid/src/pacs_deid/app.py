"""The de-identification service process: DeidService, the routing consumer, the
re-identification map and the OCR engine on the service host.

Start-up fails fast on bad settings (a project without a key, a rule naming no project). Storage
and Kafka are needed for stored studies, routing and re-identification; a streamed instance
needs neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from pacs.deid.v1 import deid_service_pb2_grpc as pb_grpc
from pacs_common.clients.storage import StorageClient
from pacs_common.events import TOPIC_INSTANCES, EventConsumer, EventPublisher
from pacs_common.grpc_client import open_channel
from pacs_common.hosted_app import HostedApp
from pacs_common.service_host import ServiceHost, StopStage, configure_process

from pacs_deid.deidentify import Deidentification, configure_pydicom
from pacs_deid.ocr import TextDetector
from pacs_deid.operations import Copier, Operations
from pacs_deid.pixels import PixelCleaner
from pacs_deid.reid_map import ReidentificationMap
from pacs_deid.routing import RoutingHandler
from pacs_deid.servicer import SERVICE, DeidServicer, authorization
from pacs_deid.settings import DeidSettings

log = logging.getLogger(__name__)


class DeidApp(HostedApp):
    """One running de-identification service."""

    def __init__(self, settings: DeidSettings) -> None:
        self.settings = settings
        self.reid_map = (
            ReidentificationMap(
                settings.database_url, settings.reid_key.get_secret_value().encode()
            )
            if settings.reid_key is not None
            else None
        )
        detector = TextDetector(settings.ocr_min_confidence) if settings.ocr else None
        self.deid = Deidentification(
            settings,
            self.reid_map,
            PixelCleaner(settings.region_masks, detector, settings.ocr_margin_px),
        )
        self.publisher = EventPublisher(settings.kafka, source="deid")
        self._storage: grpc.aio.Channel = open_channel(settings.storage_target, settings.grpc_tls)
        self.copier = Copier(self.deid, StorageClient(self._storage, timeout=120), self.publisher)
        self.operations = Operations(self.copier, settings.operation_concurrency)
        self.routing = RoutingHandler(settings.routing_rules, self.copier)
        self.consumer: EventConsumer | None = None
        self.servicer = DeidServicer(
            self.deid, self.operations, self.publisher, settings.max_instance_bytes
        )
        self.host = ServiceHost(
            settings,
            [SERVICE],
            lambda s: pb_grpc.add_DeidServiceServicer_to_server(self.servicer, s),
            interceptors=[authorization(settings.auth)],
        )
        self.host.on_stop("consumer", self._stop_consumer, StopStage.CONSUMERS)
        self.host.on_stop("operations", self.operations.stop, StopStage.CONSUMERS)
        self.host.on_stop("publisher", self.publisher.stop, StopStage.PRODUCERS)
        self.host.on_stop("resources", self._close, StopStage.RESOURCES)

    async def _start(self) -> None:
        configure_pydicom()
        if self.reid_map is not None:
            await asyncio.to_thread(self.reid_map.create_schema)
        await self.publisher.start()
        if self.settings.consume_events and self.settings.routing_rules:
            self.consumer = EventConsumer(
                self.settings.kafka,
                self.settings.consumer_group,
                [TOPIC_INSTANCES],
                self.routing,
                self.publisher,
            )
            await self.consumer.start()
        await self.host.start()

    async def _stop_consumer(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self._storage.close(None)
        if self.reid_map is not None:
            self.reid_map.close()


def create_app(settings: DeidSettings) -> DeidApp:
    """Build the service (not started)."""
    return DeidApp(settings)


async def serve() -> None:
    """Run the de-identification service until SIGTERM/SIGINT."""
    settings = DeidSettings.load()
    configure_process(settings)
    app = create_app(settings)
    await app.start()
    log.info(
        "deid service started",
        extra={"port": app.grpc_port, "projects": len(settings.projects)},
    )
    await app.host.run_until_signalled()
