"""The audit service process: the trail, the audit-topic consumer, AuditService, the export."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pacs.audit.v1 import audit_service_pb2 as pb
from pacs.audit.v1 import audit_service_pb2_grpc as pb_grpc
from pacs_common.events import EventConsumer, EventPublisher
from pacs_common.hosted_app import HostedApp
from pacs_common.service_host import ServiceHost, StopStage, configure_process

from pacs_audit.checkpoints import Checkpointer, load_key
from pacs_audit.consumer import AuditEventHandler
from pacs_audit.exporter import Exporter
from pacs_audit.servicer import AuditServicer, authorization
from pacs_audit.settings import AuditServiceSettings
from pacs_audit.syslog import CollectorSettings, SyslogSender
from pacs_audit.trail import Trail

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AuditService"].full_name


class AuditApp(HostedApp):
    """One running audit service: create with :func:`create_app`, then ``start()``/``stop()``."""

    def __init__(self, settings: AuditServiceSettings, *, consume: bool = True) -> None:
        self.settings = settings
        self.consume = consume
        self.trail = Trail(settings.database_url)
        key = load_key(
            settings.signing_key.get_secret_value() if settings.signing_key else None,
            settings.signing_key_file,
        )
        self.checkpointer = Checkpointer(self.trail, key, settings.checkpoint_every)
        self.handler = AuditEventHandler(self.trail, self.checkpointer)
        self.servicer = AuditServicer(self.trail, self.checkpointer, settings.max_results)
        self.exporter: Exporter | None = None
        if settings.syslog_host:
            self.exporter = Exporter(
                self.trail,
                SyslogSender(
                    CollectorSettings(
                        settings.syslog_host,
                        settings.syslog_port,
                        settings.syslog_ca_file,
                        settings.syslog_cert_file,
                        settings.syslog_key_file,
                        settings.syslog_server_name,
                    )
                ),
            )
        self._publisher: EventPublisher | None = None
        self.consumer: EventConsumer | None = None
        self._signer: asyncio.Task[None] | None = None
        self.host = ServiceHost(
            settings,
            [SERVICE_NAME],
            lambda s: pb_grpc.add_AuditServiceServicer_to_server(self.servicer, s),
            interceptors=[authorization(settings.auth)],
        )
        self.host.on_stop("consumer", self._stop_consumer, StopStage.CONSUMERS)
        self.host.on_stop("export", self._stop_export, StopStage.CONSUMERS)
        self.host.on_stop("publisher", self._stop_publisher, StopStage.PRODUCERS)
        self.host.on_stop("resources", self._close, StopStage.RESOURCES)

    async def _start(self) -> None:
        await asyncio.to_thread(self.trail.create_schema)
        if self.consume:
            self._publisher = EventPublisher(self.settings.kafka, source="audit")
            await self._publisher.start()
            self.consumer = EventConsumer(
                self.settings.kafka,
                self.settings.consumer_group,
                [self.settings.topic],
                self.handler.handle,
                self._publisher,
                batch_handler=self.handler.handle_batch,
            )
            await self.consumer.start()
        self._signer = asyncio.create_task(self._sign_periodically(), name="audit-checkpoints")
        if self.exporter is not None:
            self.exporter.start()
        await self.host.start_audit(self.settings.kafka, self.settings.audit)
        await self.host.start()
        log.info("audit service started", extra={"grpc_port": self.grpc_port})

    async def _sign_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval_s)
            try:
                await asyncio.to_thread(self.checkpointer.maybe_sign, force=True)
            except Exception:
                log.exception("checkpoint not signed")

    async def _stop_consumer(self) -> None:
        if self._signer is not None:
            self._signer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._signer
        if self.consumer is not None:
            await self.consumer.stop()
        # The last records get a checkpoint before the process goes.
        await asyncio.to_thread(self.checkpointer.maybe_sign, force=True)

    async def _stop_export(self) -> None:
        if self.exporter is not None:
            await self.exporter.stop()

    async def _stop_publisher(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()

    async def _close(self) -> None:
        self.trail.dispose()


def create_app(settings: AuditServiceSettings) -> AuditApp:
    """Build an audit service from its settings (nothing is started yet)."""
    return AuditApp(settings)


async def serve() -> None:
    """Run the audit service with settings from the environment until SIGTERM."""
    settings = AuditServiceSettings.load()
    configure_process(settings)
    app = create_app(settings)
    await app.start()
    await app.host.run_until_signalled()
