"""The gateway process: the DICOM listener(s) and the IngestService gRPC server.

Every gRPC object (the IngestService server, the storage and indexer channels) lives in one
dedicated event loop (:mod:`pacs_gateway.io_loop`, which explains why); the DICOM listeners run
pynetdicom's threads and submit work to that loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pacs.ingest.v1 import ingest_service_pb2, ingest_service_pb2_grpc
from pacs.query.v1 import query_service_pb2_grpc
from pacs.storage.v1 import storage_service_pb2
from pacs_common import audit_events
from pacs_common.clients.direct import DirectStorage
from pacs_common.clients.query import QueryClient
from pacs_common.clients.storage import StorageClient
from pacs_common.clients.transcode import TranscodeClient
from pacs_common.consumer_lag import ConsumerLagProbe
from pacs_common.events import TOPIC_INSTANCES
from pacs_common.grpc_client import open_channel
from pacs_common.metrics import MetricsServer
from pacs_common.service_host import ServiceHost
from pacs_common.settings import KafkaSettings
from pynetdicom import _config as pynetdicom_config
from pynetdicom import evt

from pacs_gateway.admission import AdmissionPolicy, Callers, NetworkPolicy
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.c_find import Finder, FindScp
from pacs_gateway.dimse.c_store import StoreScp
from pacs_gateway.dimse.commitment import (
    CommitmentJournal,
    Committer,
    Reporter,
    StorageCommitmentScp,
)
from pacs_gateway.dimse.commitment_recovery import CommitmentRecovery
from pacs_gateway.dimse.contexts import scp_contexts
from pacs_gateway.dimse.metrics import DicomMetrics
from pacs_gateway.dimse.mpps import MppsScp, PerformedStepRecorder
from pacs_gateway.dimse.retrieve import RetrieveScp
from pacs_gateway.dimse.retrieve_request import Retriever
from pacs_gateway.dimse.worklist import WorklistFinder, WorklistScp, route_find
from pacs_gateway.dimse_server import DimseServer
from pacs_gateway.index_lag import IndexLagGate, IndexLagWatch
from pacs_gateway.ingest import Ingest, RecentInstances
from pacs_gateway.io_loop import IoLoop
from pacs_gateway.peer_limits import PeerLimits, SharedTable, new_table
from pacs_gateway.pod_limits import duplicate_guard, limit_settings, transport_limits
from pacs_gateway.registry import Destination, RegistryWatcher
from pacs_gateway.servicer import IngestServicer, authorization
from pacs_gateway.settings import GatewaySettings
from pacs_gateway.tls import server_ssl_context
from pacs_gateway.user_identity import UserIdentityCheck

log = logging.getLogger(__name__)

INGEST_SERVICE = ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
STORAGE_SERVICE = storage_service_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name


def quiet_pynetdicom() -> None:
    """Stop pynetdicom from logging identifiers (patient data) and formatting every PDU."""
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    # Retrieve yields files, sent in PDU-sized chunks rather than decoded (dimse.retrieve).
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True


class _Clients:
    """The service clients, created inside the io loop."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.storage_channel = open_channel(settings.storage_target, settings.grpc_tls)
        self.indexer_channel = open_channel(settings.indexer_target, settings.grpc_tls)
        self.storage = StorageClient(self.storage_channel)
        self.query = QueryClient(self.indexer_channel, timeout=settings.query_timeout)
        self.direct = DirectStorage(self.storage, ca_certs=settings.s3_ca_bundle)
        self.finder = Finder(
            query_service_pb2_grpc.QueryServiceStub(self.indexer_channel), settings.query_timeout
        )
        # Retrieve asks the transcoder when a receiver does not accept the stored syntax.
        self.transcoder_channel = (
            open_channel(settings.transcoder_target, settings.grpc_tls)
            if settings.transcoder_target
            else None
        )
        self.transcoder = (
            TranscodeClient(self.transcoder_channel, timeout=settings.transcode_timeout)
            if self.transcoder_channel is not None
            else None
        )

    async def storage_ready(self) -> bool:
        """True if the storage service reports SERVING (it can store and announce)."""
        stub = health_pb2_grpc.HealthStub(self.storage_channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=STORAGE_SERVICE), timeout=5
            )
        except grpc.RpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        self.direct.close()
        await self.storage_channel.close(None)
        await self.indexer_channel.close(None)
        if self.transcoder_channel is not None:
            await self.transcoder_channel.close(None)


class GatewayApp:
    """A running gateway; ``grpc_port``, ``dicom_port`` and ``tls_port`` are the bound ports
    after :meth:`start` (``tls_port`` is None without DICOM TLS, ``dicom_port`` 0 with TLS
    only)."""

    def __init__(
        self, settings: GatewaySettings, peer_table: SharedTable | None = None, slot: int = 0
    ) -> None:
        self.settings = settings
        self.peer_limits = PeerLimits(
            peer_table if peer_table is not None else new_table(1), slot, limit_settings(settings)
        )
        self.grpc_port = 0
        self.dicom_port = 0
        self.tls_port: int | None = None
        self.callers = Callers()
        self._recent = RecentInstances()
        self._io = IoLoop()
        self._registry = (
            RegistryWatcher(settings.site_registry, settings.registry_poll_s, self._called_ae())
            if settings.site_registry is not None
            else None
        )
        self._network_policy = NetworkPolicy(
            settings.allowed_networks, settings.default_tenant, self._called_ae()
        )
        self._host: ServiceHost | None = None
        self._clients: _Clients | None = None
        self._dimse: DimseServer | None = None
        self._commitment: StorageCommitmentScp | None = None
        self._recovery: CommitmentRecovery | None = None
        self._audit: audit_events.AuditEmitter | None = None
        self._index_lag: IndexLagWatch | None = None
        self._started = False
        self._stopped = False

    def _called_ae(self) -> str | None:
        return self.settings.ae_title if self.settings.require_called_ae_title else None

    @property
    def metrics(self) -> MetricsServer | None:
        """The /metrics endpoint (first worker, with ``metrics_port`` set, after start)."""
        return self._host.metrics if self._host is not None else None

    @property
    def dimse(self) -> DimseServer:
        """The DICOM listener (after :meth:`start`)."""
        if self._dimse is None:
            raise RuntimeError("the gateway is not started")
        return self._dimse

    @property
    def registry(self) -> RegistryWatcher | None:
        """The site registry watcher, when a registry file is configured."""
        return self._registry

    def admission(self) -> AdmissionPolicy:
        """The policy deciding on each association request: the site registry when one is
        configured, else any calling AE title from the allowed networks (embedded default)."""
        if self._registry is not None:
            return self._registry.policy
        return self._network_policy

    def destination(self, tenant: str, ae_title: str) -> Destination | None:
        """A registered destination AE of ``tenant`` (C-MOVE, commitment reports)."""
        if self._registry is None:
            return None
        return self._registry.policy.registry.destination(tenant, ae_title)

    async def start(self) -> None:
        """Start the gRPC side in the io loop, then the DICOM listener(s)."""
        if self._started:
            return
        self._started = True
        quiet_pynetdicom()
        self._io.start()
        await self._io.call(self._start_io())
        self._dimse = self._build_dimse()
        settings = self.settings
        if not settings.tls_only:  # TLS-only: no plaintext DICOM port at all
            self.dicom_port = self._dimse.listen(
                settings.dicom_host, settings.dicom_port, reuse_port=settings.reuse_port
            )
        if settings.tls_port is not None:
            self.tls_port = self._dimse.listen(
                settings.dicom_host,
                settings.tls_port,
                ssl_context=server_ssl_context(settings),
                reuse_port=settings.reuse_port,
            )
        if self._registry is not None:
            self._registry.start()
        if self._recovery is not None:
            self._io.loop.call_soon_threadsafe(self._recovery.start)
        log.info(
            "gateway started",
            extra={
                "dicom_port": self.dicom_port,
                "tls_port": self.tls_port,
                "grpc_port": self.grpc_port,
            },
        )

    async def _start_io(self) -> None:
        settings = self.settings
        self._clients = clients = _Clients(settings)
        if (kafka := settings.audit_kafka()) is not None:
            self._audit = await audit_events.start_emitter(kafka, "gateway", settings.audit)
        self._index_lag = index_lag_watch(settings)
        if self._index_lag is not None:
            self._index_lag.start()
        if not settings.serve_grpc:
            return
        servicer = IngestServicer(
            self._ingest(),
            settings.ae_title,
            settings.default_tenant,
            settings.max_file_bytes,
            clients.storage_ready,
            spool_memory_bytes=settings.spool_memory_bytes,
        )
        # The host serves IngestService and /metrics in the first worker only: the others
        # record into PROMETHEUS_MULTIPROC_DIR (if set), and the first one serves all of them.
        self._host = ServiceHost(
            settings,
            [INGEST_SERVICE],
            lambda s: ingest_service_pb2_grpc.add_IngestServiceServicer_to_server(servicer, s),
            interceptors=[authorization(settings.auth)],
        )
        await self._host.start()
        self.grpc_port = self._host.port

    def _ingest(self) -> Ingest:
        assert self._clients is not None
        return Ingest(
            self._clients.storage,
            self.settings.storage_timeout,
            self._recent,
            duplicate_guard(
                self.settings, self._clients.finder, self._clients.storage, self._recent
            ),
            granted=self._clients.direct if self.settings.write_path == "grant" else None,
        )

    def _build_dimse(self) -> DimseServer:
        settings = self.settings
        clients = self._clients
        assert clients is not None
        store = StoreScp(
            self._ingest(),
            self._io,
            self.callers.get,
            settings.storage_timeout,
            self._index_lag.gate if self._index_lag is not None else None,
        )
        find = FindScp(
            clients.finder,
            io=self._io,
            caller_of=self.callers.get,
            ae_title=settings.ae_title,
            page_size=settings.find_page_size,
            timeout_s=settings.query_timeout,
        )
        query_stub = query_service_pb2_grpc.QueryServiceStub(clients.indexer_channel)
        worklist = WorklistScp(
            WorklistFinder(query_stub, settings.query_timeout),
            io=self._io,
            caller_of=self.callers.get,
            page_size=settings.find_page_size,
            timeout_s=settings.query_timeout,
        )
        mpps = MppsScp(
            PerformedStepRecorder(query_stub, settings.query_timeout),
            io=self._io,
            caller_of=self.callers.get,
            timeout_s=settings.query_timeout,
        )
        retrieve = RetrieveScp(
            Retriever(
                clients.finder,
                clients.storage,
                settings.find_page_size,
                clients.transcoder,
                settings.retrieve_spool_dir,
            ),
            self._io,
            self.callers.get,
            self.destination,
            max(settings.query_timeout, settings.storage_timeout, settings.transcode_timeout),
            lossy_fallback=settings.retrieve_lossy_fallback,
        )
        committer = Committer(
            clients.finder, clients.storage, self._recent, settings.commitment_wait_s
        )
        reporter = Reporter(settings.ae_title, self.destination)
        self._commitment = StorageCommitmentScp(
            committer,
            io=self._io,
            reporter=reporter,
            journal=CommitmentJournal(clients.query),
            caller_of=self.callers.get,
            timeout_s=settings.commitment_wait_s + settings.query_timeout,
            max_pending=settings.max_pending_commitments,
        )
        if settings.serve_grpc and settings.commitment_recovery_interval_s > 0:
            # One process per pod takes over requests whose process died (the first worker).
            self._recovery = CommitmentRecovery(
                clients.query,
                committer,
                reporter,
                interval_s=settings.commitment_recovery_interval_s,
                older_than_s=settings.commitment_wait_s
                + settings.query_timeout
                + settings.commitment_recovery_margin_s,
            )
        handlers: list[tuple[Any, Any]] = [
            (evt.EVT_C_ECHO, _handle_echo),
            (evt.EVT_C_STORE, store.handle),
            (evt.EVT_C_FIND, route_find(worklist.handle, find.handle)),
            (evt.EVT_C_MOVE, retrieve.handle_move),
            (evt.EVT_C_GET, retrieve.handle_get),
            (evt.EVT_N_ACTION, self._commitment.handle_action),
            (evt.EVT_N_CREATE, mpps.handle_create),
            (evt.EVT_N_SET, mpps.handle_set),
        ]
        return DimseServer(
            settings.ae_title,
            scp_contexts(),
            self.admission,
            self.callers,
            handlers,
            user_identity=UserIdentityCheck(
                settings.auth, self.callers, required=settings.require_user_identity
            ),
            metrics=DicomMetrics(),
            max_associations=settings.max_associations,
            max_pdu_size=settings.max_pdu_size,
            network_timeout=settings.network_timeout,
            acse_timeout=settings.acse_timeout,
            dimse_timeout=settings.dimse_timeout,
            peer_limits=self.peer_limits,
            transport_limits=transport_limits(settings),
            artim_timeout=settings.artim_timeout,
        )

    async def recover_commitments(self) -> int:
        """One pass of Storage Commitment recovery now (it also runs every
        ``commitment_recovery_interval_s`` in the first worker); returns the reports sent."""
        if self._recovery is None:
            return 0
        return await self._io.call(self._recovery.recover_once())

    async def stop(self) -> None:
        """Stop the DICOM listener(s) (letting open associations finish), then the gRPC side.

        Safe to call twice.
        """
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """:meth:`stop` for callers without an event loop (blocks); safe to call twice."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        # One deadline for the whole stop, shared by the DICOM side and the service host. Both
        # stop accepting at once and drain side by side; the channels to storage and the
        # indexer, which both sides use while draining, close last.
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        if self._registry is not None:
            self._registry.stop()
        grpc_stopped = (
            asyncio.run_coroutine_threadsafe(self._host.stop(deadline), self._io.loop)
            if self._host is not None
            else None
        )
        if self._dimse is not None:
            self._dimse.stop(_remaining(deadline))
        if self._commitment is not None:
            self._commitment.join(_remaining(deadline))
        if self._recovery is not None:
            self._io.run(self._recovery.stop(), timeout=_remaining(deadline) + 5)
        if grpc_stopped is not None:
            grpc_stopped.result(_remaining(deadline) + 10)
        if self._audit is not None:  # after the DICOM side: its last events are queued
            self._io.run(self._audit.stop(_remaining(deadline)), timeout=_remaining(deadline) + 15)
        if self._index_lag is not None:
            self._io.run(self._index_lag.stop(), timeout=10)
        if self._clients is not None:
            self._io.run(self._clients.close(), timeout=10)
        self._io.stop()


def index_lag_watch(settings: GatewaySettings) -> IndexLagWatch | None:
    """The indexer-lag gate of C-STORE (:mod:`pacs_gateway.index_lag`), when it is on and
    Kafka is configured."""
    if settings.index_lag_max_events <= 0:
        return None
    kafka = settings.kafka
    if kafka is None:
        try:
            kafka = KafkaSettings()
        except ValueError:
            log.warning("no Kafka settings (PACS_KAFKA_*): C-STORE is not held for the indexer")
            return None
    probe = ConsumerLagProbe(kafka)
    gate = IndexLagGate(
        probe,
        settings.indexer_consumer_group,
        TOPIC_INSTANCES,
        max_events=settings.index_lag_max_events,
        hold_max_s=settings.index_lag_hold_max_s,
        stall_s=settings.index_lag_stall_s,
        poll_s=settings.index_lag_poll_s,
    )
    return IndexLagWatch(probe, gate)


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _handle_echo(event: Any) -> int:
    """C-ECHO (PS3.4 A.4): the association was admitted, so we answer Success."""
    return codes.SUCCESS


def create_app(
    settings: GatewaySettings, peer_table: SharedTable | None = None, slot: int = 0
) -> GatewayApp:
    """Build (not start) a gateway; ``peer_table`` is the pod's shared peer-limit counters
    (one of its own when None) and ``slot`` this process's row in it."""
    return GatewayApp(settings, peer_table, slot)


async def serve() -> None:
    """Run the gateway until SIGTERM/SIGINT: ``workers`` processes share the DICOM port(s)
    with SO_REUSEPORT (see :mod:`pacs_gateway.workers`)."""
    from pacs_gateway.workers import run  # noqa: PLC0415  (workers imports this module)

    await run(GatewaySettings.load())
