"""The indexer process: the index database, the storage-event consumer and QueryService."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from pacs.admin.v1 import admin_service_pb2_grpc as admin_grpc
from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.query.v1 import query_service_pb2_grpc as query_grpc
from pacs_common.clients.storage import StorageClient
from pacs_common.errors import FailedPreconditionError, PacsError
from pacs_common.events import TOPIC_INSTANCES, TOPIC_WORKFLOW, EventConsumer, EventPublisher
from pacs_common.grpc_client import open_channel
from pacs_common.hosted_app import HostedApp
from pacs_common.service_host import ServiceHost, StopStage, configure_process

from pacs_indexer.admin import SERVICE as ADMIN_SERVICE
from pacs_indexer.admin import AdminServicer, admin_authorization
from pacs_indexer.consumer import IndexEventHandler
from pacs_indexer.database import Database
from pacs_indexer.extra_attributes import ExtraAttributes, backfill
from pacs_indexer.header import HeaderReader
from pacs_indexer.reconcile import Reconciler
from pacs_indexer.rejected_deletion import RejectedDeleter, RejectionPolicy
from pacs_indexer.servicer import QueryServicer, authorization
from pacs_indexer.settings import IndexerSettings
from pacs_indexer.workflow import WorkflowHandler

log = logging.getLogger(__name__)

SERVICE_NAME = query_pb.DESCRIPTOR.services_by_name["QueryService"].full_name


class IndexerApp(HostedApp):
    """One running indexer: create with :func:`create_app`, then ``start()`` / ``stop()``."""

    def __init__(self, settings: IndexerSettings) -> None:
        self.settings = settings
        self.database = Database(settings.database_url)
        try:
            self.extras = ExtraAttributes(settings.extra_attributes)
        except PacsError as exc:
            raise SystemExit(f"PACS_INDEXER_EXTRA_ATTRIBUTES: {exc.message}") from exc
        self._storage: grpc.aio.Channel | None = None
        self._publisher: EventPublisher | None = None
        self.consumer: EventConsumer | None = None
        self.workflow_consumer: EventConsumer | None = None
        self.rejected_deleter: RejectedDeleter | None = None
        self.servicer = QueryServicer(
            self.database, settings.max_results, settings.fuzzy_matching_default, self.extras
        )
        self.admin = AdminServicer(self.database, settings.retention)
        self.host = ServiceHost(
            settings,
            [SERVICE_NAME, ADMIN_SERVICE],
            self._register,
            interceptors=[authorization(settings.auth), admin_authorization(settings.auth)],
        )
        self._statistics: asyncio.Task[None] | None = None
        host = self.host
        host.on_stop("statistics", self._stop_statistics, StopStage.CONSUMERS)
        host.on_stop("consumer", self._stop_consumer, StopStage.CONSUMERS)
        host.on_stop("rejected-deletion", self._stop_rejected_deletion, StopStage.CONSUMERS)
        host.on_stop("workflow", self._stop_workflow, StopStage.CONSUMERS)
        host.on_stop("publisher", self._stop_publisher, StopStage.PRODUCERS)
        host.on_stop("resources", self._close, StopStage.RESOURCES)

    def _register(self, server: grpc.aio.Server) -> None:
        query_grpc.add_QueryServiceServicer_to_server(self.servicer, server)
        admin_grpc.add_AdminServiceServicer_to_server(self.admin, server)

    async def _start(self) -> None:
        if self.settings.migrate_on_start:
            await asyncio.to_thread(self.database.create_schema)
        else:
            # Deployed: the Helm hook migrated before the pods roll; a pod never races it.
            try:
                await asyncio.to_thread(self.database.check_schema)
            except FailedPreconditionError as exc:
                raise SystemExit(exc.message) from exc
        await asyncio.to_thread(self.database.refresh_statistics)
        self._statistics = asyncio.create_task(self._refresh_statistics(), name="statistics")
        if self.extras:
            # Once per newly configured attribute; large indexes make this start-up slower.
            await asyncio.to_thread(self._backfill)
        if self.settings.consume_events:
            self._storage = open_channel(self.settings.storage_target, self.settings.grpc_tls)
            self._publisher = EventPublisher(self.settings.kafka, source="indexer")
            await self._publisher.start()
            storage = StorageClient(self._storage, timeout=60)
            handler = IndexEventHandler(
                self.database,
                HeaderReader(storage, self.settings.header_prefix_bytes),
                self._publisher,
                self.extras,
            )
            self.servicer.reconciler = Reconciler(self.database, handler, storage)
            self.consumer = EventConsumer(
                self.settings.kafka,
                self.settings.consumer_group,
                [TOPIC_INSTANCES],
                handler,
                self._publisher,
                batch_handler=handler.handle_batch,
                batch_max_records=self.settings.batch_max_events,
                on_health=self._consumer_health,
            )
            await self.consumer.start()
            self.servicer.publisher = self._publisher
            # HL7 patient and order events: their own group, each partition's records in
            # order, so that one patient's events apply in order (pacs_indexer.workflow).
            workflow = WorkflowHandler(self.database, handler.write_lock)
            self.workflow_consumer = EventConsumer(
                self.settings.kafka,
                self.settings.workflow_consumer_group,
                [TOPIC_WORKFLOW],
                workflow,
                self._publisher,
                batch_handler=workflow.handle_batch,
                batch_max_records=self.settings.batch_max_events,
            )
            await self.workflow_consumer.start()
            # IHE IOCM: rejected instances leave storage by policy (pacs_indexer.rejected_deletion).
            self.rejected_deleter = RejectedDeleter(
                self.database,
                storage,
                self.rejection_policy(),
                self.settings.rejected_sweep_interval_s,
                handler.write_lock,
            )
            self.rejected_deleter.start()
            self.admin.write_lock = handler.write_lock
        if self._storage is None:  # AdminService deletes through storage in every mode
            self._storage = open_channel(self.settings.storage_target, self.settings.grpc_tls)
        self.admin.storage = StorageClient(self._storage, timeout=60)
        await self.host.start_audit(self.settings.kafka, self.settings.audit)
        await self.host.start()
        log.info("indexer started", extra={"grpc_port": self.grpc_port})

    async def _consumer_health(self, healthy: bool) -> None:
        """The indexer reports NOT_SERVING while its consume loop is down and restarting
        (queries would answer from an index that no longer catches up)."""
        await self.host.set_serving("", healthy)

    async def _stop_statistics(self) -> None:
        if self._statistics is not None:
            self._statistics.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._statistics

    async def _stop_consumer(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    def rejection_policy(self) -> RejectionPolicy:
        """How long rejected instances stay in storage, from the settings."""
        return RejectionPolicy(
            delete_after=self.settings.rejected_delete_after,
            retention_expired_delete_after=self.settings.retention_expired_delete_after,
            by_tenant=self.settings.rejected_delete_after_by_tenant,
        )

    async def _stop_rejected_deletion(self) -> None:
        if self.rejected_deleter is not None:
            await self.rejected_deleter.stop()

    async def _stop_workflow(self) -> None:
        if self.workflow_consumer is not None:
            await self.workflow_consumer.stop()

    async def _stop_publisher(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()

    async def _close(self) -> None:
        if self._storage is not None:
            await self._storage.close(grace=None)
        self.database.dispose()

    async def _refresh_statistics(self) -> None:
        """Keep the query planner's statistics current as the index grows."""
        while True:
            await asyncio.sleep(self.settings.statistics_interval_s)
            try:
                await asyncio.to_thread(self.database.refresh_statistics)
            except PacsError as exc:
                log.warning("could not refresh planner statistics", extra={"error": repr(exc)})

    def _backfill(self) -> None:
        with self.database.session() as session:
            backfill(session.connection(), self.extras)


def create_app(settings: IndexerSettings) -> IndexerApp:
    """Build an indexer from its settings (nothing is started yet)."""
    return IndexerApp(settings)


async def serve() -> None:
    """Run the indexer with settings from the environment until SIGTERM."""
    settings = IndexerSettings.load()
    configure_process(settings)
    app = create_app(settings)
    await app.start()
    await app.host.run_until_signalled()
