"""The transcoder process: TranscodeService, and the on-store policy consumer."""

from __future__ import annotations

import logging

from pacs.transcode.v1 import transcode_service_pb2_grpc as pb_grpc
from pacs_common.clients.storage import StorageClient
from pacs_common.events import TOPIC_INSTANCES, EventConsumer, EventPublisher
from pacs_common.grpc_client import open_channel
from pacs_common.hosted_app import HostedApp
from pacs_common.service_host import ServiceHost, StopStage, configure_process

from pacs_transcoder import servicer as servicer_module
from pacs_transcoder.conversion import Converter
from pacs_transcoder.on_store import OnStoreHandler
from pacs_transcoder.servicer import SERVICE, TranscodeServicer
from pacs_transcoder.settings import TranscoderSettings

log = logging.getLogger(__name__)


class TranscoderApp(HostedApp):
    """One running transcoder: create with :func:`create_app`, then ``start()`` / ``stop()``."""

    def __init__(self, settings: TranscoderSettings) -> None:
        self.settings = settings
        self.converter = Converter(
            settings.max_concurrent,
            settings.max_object_size,
            settings.spool_memory_bytes,
            settings.lossy_options(),
            settings.uid_root,
        )
        self._channel = open_channel(settings.storage_target, settings.grpc_tls)
        self.storage = StorageClient(self._channel, timeout=settings.storage_timeout_s)
        self.servicer = TranscodeServicer(self.converter, self.storage, settings.chunk_size)
        self._publisher: EventPublisher | None = None
        self.consumer: EventConsumer | None = None
        self.handler: OnStoreHandler | None = None
        trusted = settings.auth.trusted_services | set(settings.trusted_services)
        auth = settings.auth.model_copy(update={"trusted_services": trusted})
        self.host = ServiceHost(
            settings,
            [SERVICE],
            lambda server: pb_grpc.add_TranscodeServiceServicer_to_server(self.servicer, server),
            interceptors=[servicer_module.authorization(auth)],
        )
        self.host.on_stop("consumer", self._stop_consumer, StopStage.CONSUMERS)
        self.host.on_stop("publisher", self._stop_publisher, StopStage.PRODUCERS)
        self.host.on_stop("resources", self._close, StopStage.RESOURCES)

    async def _start(self) -> None:
        if self.settings.consume_events:
            self._publisher = EventPublisher(self.settings.kafka, source="transcoder")
            await self._publisher.start()
            self.handler = OnStoreHandler(
                self.settings.policy, self.storage, self.converter, self._publisher
            )
            self.consumer = EventConsumer(
                self.settings.kafka,
                self.settings.consumer_group,
                [TOPIC_INSTANCES],
                self.handler.handle,
                self._publisher,
            )
            await self.consumer.start()
        await self.host.start()
        log.info("transcoder started", extra={"grpc_port": self.grpc_port})

    async def _stop_consumer(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def _stop_publisher(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()

    async def _close(self) -> None:
        await self._channel.close(grace=None)


def create_app(settings: TranscoderSettings) -> TranscoderApp:
    """Build a transcoder from its settings (nothing is started yet)."""
    return TranscoderApp(settings)


async def serve() -> None:
    """Run the transcoder with settings from the environment until SIGTERM."""
    settings = TranscoderSettings.load()
    configure_process(settings)
    app = create_app(settings)
    await app.start()
    await app.host.run_until_signalled()
