"""Announcing stored and deleted instances on Kafka, and staying up while Kafka is down.

The service starts even when no broker answers: a C-STORE must then get a failure status from
the gateway ("out of resources", so the modality retries), which needs a storage service that
answers UNAVAILABLE rather than one that is not there. A background task keeps trying to
connect every ``retry_s`` seconds; ``on_change`` reports readiness (the app mirrors it in the
StorageService health status).

When a publish fails later (the brokers went away), the publisher is dropped and the same
reconnect loop starts: until a fresh connection succeeds, Put fails at once with UNAVAILABLE
and writes nothing, instead of storing each retry and waiting a full request timeout for an
acknowledgement that cannot come (the gateway's DIMSE peer would time out first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from pacs.events.v1 import instance_events_pb2
from pacs.type.v1 import instance_pb2
from pacs_common.errors import UnavailableError
from pacs_common.events import TOPIC_INSTANCES, EventPublisher, now_rfc3339
from pacs_common.settings import KafkaSettings

log = logging.getLogger(__name__)


class Announcer:
    """Publishes InstanceStored/InstanceDeleted on ``pacs.instances.v1`` (key: study UID)."""

    def __init__(
        self,
        settings: KafkaSettings,
        source: str,
        retry_s: float,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.retry_s = retry_s
        self.on_change = on_change
        self._publisher: EventPublisher | None = None
        self._connector: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._outage_logged = False

    @property
    def ready(self) -> bool:
        """True once a producer is connected."""
        return self._publisher is not None

    async def start(self) -> None:
        """Try to connect now; if Kafka is down, keep trying in the background."""
        if not await self._connect_once():
            self._reconnect_in_background()

    def _reconnect_in_background(self) -> None:
        if self._connector is None or self._connector.done():
            self._connector = asyncio.create_task(self._keep_connecting(), name="kafka-connect")

    async def _connect_once(self) -> bool:
        publisher = EventPublisher(self.settings, self.source)
        try:
            await publisher.start()
        except UnavailableError as exc:
            # Once per outage at WARNING; every retry_s attempt after that at DEBUG.
            level = logging.DEBUG if self._outage_logged else logging.WARNING
            log.log(level, "Kafka unreachable; Put answers UNAVAILABLE until it is back: %s", exc)
            self._outage_logged = True
            return False
        self._outage_logged = False
        self._publisher = publisher
        log.info("connected to Kafka", extra={"bootstrap": self.settings.bootstrap})
        if self.on_change is not None:
            self.on_change(True)
        return True

    async def _keep_connecting(self) -> None:
        while True:
            await asyncio.sleep(self.retry_s)
            if await self._connect_once():
                return

    async def stop(self) -> None:
        """Flush and disconnect; safe to call twice."""
        task, self._connector = self._connector, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.stop()
        for retired in list(self._retired):
            with contextlib.suppress(BaseException):
                await retired

    def check_ready(self) -> None:
        """Raise UnavailableError when nothing could be announced right now, so that a Put
        fails before it writes anything."""
        if self._publisher is None:
            raise UnavailableError("Kafka is unreachable: cannot announce stored instances")

    async def instance_stored(
        self, info: instance_pb2.ObjectInfo, new_version: bool, header_part10: bytes = b""
    ) -> None:
        """Publish InstanceStored (with the object's header, if given) and wait for the
        brokers' acknowledgement (acks=all)."""
        event = instance_events_pb2.InstanceStored(
            object=info, new_version=new_version, header_part10=header_part10
        )
        await self._publish(info.instance.study_instance_uid, event)

    async def instance_deleted(self, ref: instance_pb2.InstanceRef, all_versions: bool) -> None:
        """Publish InstanceDeleted and wait for the acknowledgement."""
        event = instance_events_pb2.InstanceDeleted(
            instance=ref, all_versions=all_versions, deleted_time=now_rfc3339()
        )
        await self._publish(ref.study_instance_uid, event)

    async def _publish(
        self,
        key: str,
        event: instance_events_pb2.InstanceStored | instance_events_pb2.InstanceDeleted,
    ) -> None:
        publisher = self._publisher
        if publisher is None:
            raise UnavailableError("Kafka is unreachable: the event was not published")
        try:
            await publisher.publish(TOPIC_INSTANCES, key, event)
        except UnavailableError:
            self._lost(publisher)
            raise

    def _lost(self, publisher: EventPublisher) -> None:
        """Drop a publisher whose brokers stopped acknowledging and reconnect afresh."""
        if self._publisher is not publisher:
            return  # another failed publish already handled it
        log.warning("Kafka stopped acknowledging events; Put answers UNAVAILABLE until it is back")
        self._publisher = None
        if self.on_change is not None:
            self.on_change(False)
        # Stopping flushes what is still queued (delivered if the brokers come back, expired
        # after the request timeout otherwise); never let it hold up anything else.
        retired = asyncio.create_task(self._retire(publisher), name="kafka-retire")
        self._retired.add(retired)
        retired.add_done_callback(self._retired.discard)
        self._reconnect_in_background()

    async def _retire(self, publisher: EventPublisher) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2 * self.settings.request_timeout_ms / 1000):
                await publisher.stop()
