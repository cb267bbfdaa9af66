"""The audit emitter: how every service publishes its audit events without blocking the user.

Events (:class:`pacs.events.v1.AuditEvent`, built by :mod:`pacs_common.audit_events`) are
published on :data:`TOPIC_AUDIT` with the publisher guarantees of ``InstanceStored``
(``acks=all``, an idempotent producer) and consumed by the audit service.

**Never blocking the user.** An audit hook runs inside the user's operation (a C-STORE
handler in a pynetdicom thread, a gRPC call), so :meth:`AuditEmitter.emit` only puts the event
in a bounded in-memory queue (thread-safe) and returns; a background task drains the queue in
batches and publishes them, retrying while Kafka is down. The queue is flushed when the service
stops (the host's PRODUCERS stage). What the queue cannot hold (Kafka down for long under load)
is dropped, counted in ``pacs_audit_events_dropped_total`` and logged as a count — the price of
never blocking the user; alert on that counter. Redelivered or retried events carry the same
``id``, which the audit service stores once.

**One emitter per process.** Hooks are one-line calls deep inside handlers that several teams
edit (:func:`emit`), so the process's emitter is installed once by its host (:func:`install`)
rather than passed through every constructor; with none installed (auditing off, unit tests)
:func:`emit` does nothing.

This module never logs an event's content (it carries patient identifiers by design).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from pacs.events.v1 import audit_events_pb2 as audit_pb
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pacs_common.errors import UnavailableError
from pacs_common.events import EventPublisher, now_rfc3339
from pacs_common.metrics import (
    AUDIT_EVENTS_DROPPED,
    AUDIT_EVENTS_EMITTED,
    AUDIT_EVENTS_PUBLISHED,
    AUDIT_QUEUE_DEPTH,
)
from pacs_common.settings import KafkaSettings

log = logging.getLogger(__name__)

TOPIC_AUDIT = "pacs.audit.v1"
"""AuditEvent, keyed by tenant."""


class AuditSettings(BaseSettings):
    """How a service emits audit events (``PACS_AUDIT_EVENTS_*``)."""

    model_config = SettingsConfigDict(env_prefix="PACS_AUDIT_EVENTS_", extra="ignore")

    enabled: bool = Field(True, description="emit audit events (off only for benchmarks)")
    topic: str = Field(TOPIC_AUDIT, description="Kafka topic of audit events")
    queue_size: int = Field(
        100_000, ge=1, description="events held in memory while Kafka is slow or down"
    )
    batch_size: int = Field(500, ge=1, description="most events published in one round trip")
    linger_s: float = Field(
        0.2,
        ge=0,
        description="how long the first queued event waits for others to share its round trip "
        "(one produce request per C-STORE would cost the brokers more than the C-STORE)",
    )


class AuditEmitter:
    """Publishes audit events from a bounded queue in the background (see module docstring)."""

    def __init__(self, kafka: KafkaSettings, source: str, settings: AuditSettings) -> None:
        self.source = source
        self.settings = settings
        self._publisher = EventPublisher(kafka, source=source)
        self._queue: asyncio.Queue[audit_pb.AuditEvent] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._dropped_full = 0
        self.published = 0

    async def start(self) -> None:
        """Start draining in the running loop. Kafka may be down: the drain task connects
        (and reconnects) by itself, so a service starts and serves without it."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self.settings.queue_size)
        self._task = asyncio.create_task(self._drain(), name=f"audit-{self.source}")

    def emit(self, event: audit_pb.AuditEvent) -> None:
        """Queue ``event`` for publishing; never blocks, callable from any thread."""
        if self._loop is None or self._stopping:
            self._drop("stopped")
            return
        if not event.id:
            event.id = str(uuid.uuid4())
        if not event.event_time:
            event.event_time = now_rfc3339()
        if not event.source:
            event.source = self.source
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._put(event)
        else:
            try:
                self._loop.call_soon_threadsafe(self._put, event)
            except RuntimeError:  # the loop closed
                self._drop("stopped")

    def _put(self, event: audit_pb.AuditEvent) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped_full += 1
            self._drop("queue_full")
            if self._dropped_full == 1 or self._dropped_full % 1000 == 0:
                log.error(
                    "audit queue full: audit events are being dropped",
                    extra={"dropped": self._dropped_full, "queue_size": self.settings.queue_size},
                )
            return
        AUDIT_EVENTS_EMITTED.labels(self.source).inc()
        AUDIT_QUEUE_DEPTH.set(self._queue.qsize())

    def _drop(self, reason: str) -> None:
        AUDIT_EVENTS_DROPPED.labels(self.source, reason).inc()

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._publisher.start()
                return
            except UnavailableError as exc:
                log.warning(
                    "audit publisher cannot reach Kafka; retrying", extra={"error": str(exc)}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _drain(self) -> None:
        assert self._queue is not None
        queue = self._queue
        await self._connect()
        while True:
            batch = [await queue.get()]
            full = queue.qsize() >= self.settings.batch_size - 1
            if self.settings.linger_s and not full and not self._stopping:
                await asyncio.sleep(self.settings.linger_s)
            while len(batch) < self.settings.batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            await self._publish(batch)
            for _ in batch:
                queue.task_done()
            AUDIT_QUEUE_DEPTH.set(queue.qsize())

    async def _publish(self, batch: list[audit_pb.AuditEvent]) -> None:
        delay = 0.2
        events = [(event.tenant, event) for event in batch]
        while True:
            try:
                await self._publisher.publish_many(self.settings.topic, events)
            except UnavailableError as exc:
                # Retrying may duplicate some: the audit service stores each event id once.
                log.warning("audit events not acknowledged; retrying", extra={"error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.published += len(batch)
            AUDIT_EVENTS_PUBLISHED.labels(self.source).inc(len(batch))
            return

    async def flush(self) -> None:
        """Wait until every queued event was acknowledged."""
        if self._queue is not None:
            await self._queue.join()

    async def stop(self, drain_s: float | None = None) -> None:
        """Refuse new events, publish what is queued, disconnect; safe to call twice.

        Args:
            drain_s: how long to wait for the queue to drain (None: until done, or until the
                caller cancels, as the host's stop deadline does). What is still queued then
                is counted as dropped.
        """
        self._stopping = True
        if _current is self:
            install(None)
        try:
            if self._task is not None and not self._task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.flush(), drain_s)
        finally:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
            if self._queue is not None and (left := self._queue.qsize()):
                AUDIT_EVENTS_DROPPED.labels(self.source, "stopped").inc(left)
                log.error("audit events not published before the stop", extra={"count": left})
            await self._publisher.stop()


_current: AuditEmitter | None = None


def install(emitter: AuditEmitter | None) -> None:
    """Make ``emitter`` the process's emitter (None: auditing off)."""
    global _current  # noqa: PLW0603  (the one per-process emitter: see the module docstring)
    _current = emitter


def emit(event: audit_pb.AuditEvent | None) -> None:
    """Queue ``event`` on the process's emitter; does nothing without one. Never raises:
    an audit hook must not change the outcome of the user's operation."""
    emitter = _current
    if emitter is None or event is None:
        return
    try:
        emitter.emit(event)
    except Exception:
        log.exception("audit event not queued")


async def start_emitter(
    kafka: KafkaSettings, source: str, settings: AuditSettings | None = None
) -> AuditEmitter | None:
    """Create, start and install the process's emitter (None when auditing is off)."""
    settings = settings or AuditSettings()
    if not settings.enabled:
        install(None)
        return None
    emitter = AuditEmitter(kafka, source, settings)
    await emitter.start()
    install(emitter)
    return emitter
