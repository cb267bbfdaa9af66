"""The storage service process: wiring, start/stop, and ``serve()``.

Start-up never fails because a dependency is down: the bucket is created on first use if S3 was
unreachable at start, and Kafka is reconnected in the background (see
:mod:`pacs_storage.announcer`). Meanwhile Put and Delete answer UNAVAILABLE and the health
status of ``pacs.storage.v1.StorageService`` is NOT_SERVING, while the overall status ("")
stays SERVING so that the process is not restarted for someone else's outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from pacs.storage.v1 import storage_service_pb2_grpc as pb_grpc
from pacs_common.errors import PacsError
from pacs_common.hosted_app import HostedApp
from pacs_common.s3 import make_s3_client
from pacs_common.service_host import ServiceHost, StopStage, configure_process

from pacs_storage.announcer import Announcer
from pacs_storage.bucket import Bucket
from pacs_storage.grants import Grants
from pacs_storage.intents import IntentLog, Reconciler
from pacs_storage.servicer import SERVICE_NAME, StorageServicer
from pacs_storage.settings import StorageSettings
from pacs_storage.store import InstanceStore
from pacs_storage.uid_claims import UidClaims

log = logging.getLogger(__name__)


def sse_arguments(settings: StorageSettings) -> dict[str, str]:
    """The server-side-encryption arguments sent with every write."""
    if settings.sse == "none":
        return {}
    arguments: dict[str, str] = {"ServerSideEncryption": settings.sse}
    if settings.sse == "aws:kms" and settings.sse_kms_key_id:
        arguments["SSEKMSKeyId"] = settings.sse_kms_key_id
    return arguments


def uid_claims_of(bucket: Bucket, settings: StorageSettings) -> UidClaims | None:
    """The SOP Instance UID claims, when settings ask for them and S3 can make them atomic."""
    if not settings.uid_claims:
        return None
    if not settings.conditional_writes:
        log.warning(
            "uid_claims needs conditional_writes: a SOP Instance UID is not checked against "
            "other studies at the store"
        )
        return None
    # A granted PUT may arrive until its grant expires; a claim is stale only after that.
    return UidClaims(bucket, stale_after_s=settings.grant_ttl_s + settings.reconcile_after_s)


class StorageApp(HostedApp):
    """One storage service: its S3 bucket and Kafka announcer on the service host."""

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self.s3 = make_s3_client(settings.s3)
        self.bucket = Bucket(
            self.s3, settings.s3, sse_arguments(settings), settings.grant_s3_endpoint
        )
        self.announcer = Announcer(
            settings.kafka, settings.service_name, settings.kafka_retry_s, self._kafka_changed
        )
        self.intents = IntentLog(self.bucket)
        claims = uid_claims_of(self.bucket, settings)
        self.store = InstanceStore(self.bucket, self.announcer, settings, self.intents, claims)
        grants = Grants(self.bucket, self.announcer, self.intents, settings, claims)
        servicer = StorageServicer(self.store, grants)
        self.reconciler = Reconciler(
            self.bucket,
            self.announcer,
            after_s=settings.reconcile_after_s,
            interval_s=settings.reconcile_interval_s,
            header_cap=settings.event_header_cap_bytes,
            abandon_after_s=settings.grant_ttl_s + settings.reconcile_after_s,
        )
        self.host = ServiceHost(
            settings,
            [SERVICE_NAME],
            lambda srv: pb_grpc.add_StorageServiceServicer_to_server(servicer, srv),
        )
        self.host.on_stop("reconciler", self.reconciler.stop, StopStage.CONSUMERS)
        self.host.on_stop("intent clearing", self.intents.drain, StopStage.PRODUCERS)
        self.host.on_stop("announcer", self.announcer.stop, StopStage.PRODUCERS)
        self.host.on_stop("resources", self._close, StopStage.RESOURCES)
        self._health_tasks: set[asyncio.Task[None]] = set()

    def _kafka_changed(self, ready: bool) -> None:
        if self.host.port == 0 or self.host.stopping:
            return
        task = asyncio.create_task(self._update_health())
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    async def _update_health(self) -> None:
        """StorageService is SERVING only while events can be published (read at the moment
        of setting, so concurrent updates cannot leave a stale status behind)."""
        await self.host.set_serving(SERVICE_NAME, self.announcer.ready)

    async def _start(self) -> None:
        # boto3 calls run in the loop's default executor, and a Put streamed to S3 holds a
        # worker while its stream arrives: size it past asyncio's default (CPU count + 4) so
        # that other S3 calls never wait behind streamed Puts.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(self.settings.max_streamed_puts + 16, thread_name_prefix="s3")
        )
        try:
            await self.store.ensure_bucket()
        except PacsError as exc:
            log.warning("S3 unreachable at start; bucket checked again on first use: %s", exc)
        await self.announcer.start()
        await self.host.start()
        await self._update_health()
        self.reconciler.start()

    async def _close(self) -> None:
        for task in list(self._health_tasks):
            with contextlib.suppress(BaseException):
                await task
        self.s3.close()


def create_app(settings: StorageSettings) -> StorageApp:
    """Build the service (not started; the port is bound by ``start``)."""
    return StorageApp(settings)


async def serve() -> None:
    """Run the storage service until SIGTERM/SIGINT, then shut down gracefully."""
    settings = StorageSettings.load()
    configure_process(settings)
    app = create_app(settings)
    await app.start()
    log.info(
        "storage service started",
        extra={"port": app.grpc_port, "bucket": settings.s3.bucket, "sse": settings.sse},
    )
    await app.host.run_until_signalled()
