"""The hl7 process: the MLLP listener, the event publisher, the ORU sender, and the service
host for health, /metrics and the ordered stop.

The MLLP listener is not gRPC, but the process still runs on the one service host
(:class:`~pacs_common.service_host.ServiceHost` with no servicer of its own): Kubernetes probes
its gRPC health (SERVING once the listener is bound), Prometheus scrapes its /metrics, and
SIGTERM stops it in order: the listener stops accepting and its connections end, then the
ORU consumer, then the producer is flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hl7.mllp import InvalidBlockError, start_hl7_server
from hl7.mllp.streams import HL7StreamReader, HL7StreamWriter
from pacs_common.events import TOPIC_WORKFLOW, EventConsumer, EventPublisher
from pacs_common.hosted_app import HostedApp
from pacs_common.service_host import ServiceHost, StopStage, configure_process

from pacs_hl7.ack import bare_reject
from pacs_hl7.oru import ReportSender
from pacs_hl7.receiver import Receiver
from pacs_hl7.settings import Hl7Settings

log = logging.getLogger(__name__)


class Hl7App(HostedApp):
    """One running hl7 service: create with :func:`create_app`, then ``start()`` / ``stop()``."""

    def __init__(self, settings: Hl7Settings) -> None:
        self.settings = settings
        self.publisher = EventPublisher(settings.kafka, source="hl7")
        self.receiver = Receiver(settings, self.publisher)
        self.mllp_port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.oru_consumer: EventConsumer | None = None
        self.host = ServiceHost(settings, [], lambda _server: None)
        self.host.on_stop("mllp", self._stop_listener, StopStage.CONSUMERS)
        self.host.on_stop("oru", self._stop_oru, StopStage.CONSUMERS)
        self.host.on_stop("publisher", self.publisher.stop, StopStage.PRODUCERS)

    async def _start(self) -> None:
        settings = self.settings
        await self.publisher.start()
        if settings.oru_host:
            self.oru_consumer = EventConsumer(
                settings.kafka,
                settings.consumer_group,
                [TOPIC_WORKFLOW],
                ReportSender(settings),
                self.publisher,
            )
            await self.oru_consumer.start()
        self._server = await start_hl7_server(
            self._connection,
            host=settings.mllp_host,
            port=settings.mllp_port,
            limit=settings.max_message_bytes,
        )
        self.mllp_port = int(self._server.sockets[0].getsockname()[1])
        await self.host.start()
        log.info("hl7 started", extra={"mllp_port": self.mllp_port, "grpc_port": self.grpc_port})

    async def _connection(self, reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        """Messages of one connection, one after the other (their order is kept)."""
        settings = self.settings
        while True:
            try:
                block = await asyncio.wait_for(reader.readblock(), settings.idle_timeout_s)
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            except (ValueError, InvalidBlockError) as exc:
                # Too large, or not framed: answer so that the sender does not wait forever.
                text = "message too large" if isinstance(exc, ValueError) else "not MLLP framed"
                writer.writeblock(
                    bare_reject(text, settings.application, settings.facility).encode()
                )
                await writer.drain()
                continue
            ack, encoding = await self.receiver.handle(bytes(block))
            writer.writeblock(ack.encode(encoding, errors="replace"))
            await writer.drain()

    async def _stop_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            for task in list(self._connections):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._server.wait_closed()

    async def _stop_oru(self) -> None:
        if self.oru_consumer is not None:
            await self.oru_consumer.stop()


def create_app(settings: Hl7Settings) -> Hl7App:
    """Build an hl7 service from its settings (nothing is started yet)."""
    return Hl7App(settings)


async def serve() -> None:
    """Run the hl7 service with settings from the environment until SIGTERM."""
    settings = Hl7Settings.load()
    configure_process(settings)
    app = create_app(settings)
    await app.start()
    await app.host.run_until_signalled()
