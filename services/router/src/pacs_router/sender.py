"""One destination's sender: drain its queue in order, committing only what was accepted.

Each destination has its own consumer group (``router-send-<name>``) on its own topic, run by
:class:`pacs_common.events.EventConsumer` one record at a time: the offset of an instance is
committed only after the destination accepted it. A destination that is down raises a
retriable error, which the consumer retries with backoff without limit and without moving on
(the queue waits, nothing is skipped, and order is kept); a permanent refusal raises a
permanent error, which the consumer parks on the group's dead-letter topic
(``pacs.deadletter.router-send-<name>.v1``) with the reason in the ``dlq_error`` header, and
the queue moves on. Because destinations have separate groups, one destination that is down
never holds back another.

An instance deleted from cloudpacs after it was queued is not sent (there is nothing to send,
and sending a deleted instance would be wrong); it is counted as skipped in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import urllib3
from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError
from pacs.events.v1 import route_events_pb2 as route_pb
from pacs.type.v1 import instance_pb2
from pacs_common.clients.direct import DirectStorage
from pacs_common.errors import InvalidArgumentError, NotFoundError, is_permanent, is_retriable
from pacs_common.events import now_rfc3339
from pacs_common.logging import redact_uids
from pacs_common.metrics import (
    ROUTE_FAILED,
    ROUTE_LAST_SUCCESS,
    ROUTE_RETRIES,
    ROUTE_SEND_DURATION,
    ROUTE_SENT,
)

from pacs_router.audit import audit_sent
from pacs_router.dimse_send import DimseLink, SendResult
from pacs_router.rules import Destination, DimseDestination, StowDestination
from pacs_router.stow_send import stow

log = logging.getLogger(__name__)


@dataclass
class SenderState:
    """What Status reports about one destination (since the process started)."""

    sent: int = 0
    failed: int = 0
    retries: int = 0
    skipped: int = 0
    last_error: str = ""
    last_error_time: str = ""
    last_success_time: str = ""


class DestinationSender:
    """The handler of one destination's queue records."""

    def __init__(
        self,
        name: str,
        destination: Destination,
        storage: DirectStorage,
        *,
        calling_ae: str,
        timeout_s: float,
        max_retries: int,
    ) -> None:
        self.name = name
        self.destination = destination
        self.storage = storage
        self.calling_ae = calling_ae
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.state = SenderState()
        self._attempts: dict[tuple[int, int], int] = {}
        self._http = urllib3.PoolManager(
            retries=False,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            ca_certs=str(destination.ca_file)
            if isinstance(destination, StowDestination) and destination.ca_file
            else None,
        )
        self.link = (
            DimseLink(destination, calling_ae, timeout_s)
            if isinstance(destination, DimseDestination)
            else None
        )
        ROUTE_SENT.labels(name)
        ROUTE_FAILED.labels(name)
        ROUTE_RETRIES.labels(name)
        ROUTE_LAST_SUCCESS.labels(name).set(0)

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Send the instance one record names; return only once the destination accepted it.

        Raises:
            UnavailableError: the destination or storage is down (the consumer retries).
            FailedPreconditionError: the destination refused the instance for good (the
                consumer dead-letters the record).
        """
        try:
            routed = route_pb.InstanceRouted.FromString(record.value or b"")
        except DecodeError as exc:
            raise InvalidArgumentError(f"undecodable InstanceRouted: {exc}") from exc
        key = (record.partition, record.offset)
        started = time.perf_counter()
        info = routed.object
        part10 = b""
        try:
            part10 = await self.storage.get(info.instance, version_id=info.version_id)
            result = await self._send(info, part10)
        except NotFoundError:
            self.state.skipped += 1
            log.info("queued instance no longer stored; not sent", extra={"destination": self.name})
            return
        except Exception as exc:
            if self._note_failure(key, exc):
                audit_sent(
                    self.calling_ae, self.name, self.destination, info.instance, part10, ok=False
                )
            raise
        audit_sent(self.calling_ae, self.name, self.destination, info.instance, part10, ok=True)
        self._attempts.pop(key, None)
        ROUTE_SEND_DURATION.labels(self.name).observe(time.perf_counter() - started)
        ROUTE_SENT.labels(self.name).inc()
        ROUTE_LAST_SUCCESS.labels(self.name).set(time.time())
        self.state.sent += 1
        self.state.last_success_time = now_rfc3339()
        if result.status != 0:
            log.info(
                "destination accepted with a warning",
                extra={"destination": self.name, "status": f"0x{result.status:04X}"},
            )

    async def _send(self, info: instance_pb2.ObjectInfo, part10: bytes) -> SendResult:
        destination = self.destination
        if isinstance(destination, DimseDestination):
            assert self.link is not None
            return await asyncio.to_thread(
                self.link.send,
                part10,
                info.instance.sop_class_uid,
                info.instance.transfer_syntax_uid,
            )
        return await asyncio.to_thread(
            stow, destination, self._http, part10, info.instance.sop_instance_uid
        )

    def _note_failure(self, key: tuple[int, int], exc: Exception) -> bool:
        """Record the error for Status and metrics, the way the consumer will treat it;
        True when the consumer dead-letters the record (no more attempts)."""
        message = redact_uids(getattr(exc, "message", None) or repr(exc))[:500]
        self.state.last_error = message
        self.state.last_error_time = now_rfc3339()
        attempts = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempts
        if is_permanent(exc) or (not is_retriable(exc) and attempts > self.max_retries):
            self._attempts.pop(key, None)
            self.state.failed += 1
            ROUTE_FAILED.labels(self.name).inc()
            log.error(
                "destination refused an instance; dead-lettered",
                extra={"destination": self.name, "error": message},
            )
            return True
        self.state.retries += 1
        ROUTE_RETRIES.labels(self.name).inc()
        log.warning("send failed; retrying", extra={"destination": self.name, "error": message})
        return False

    async def release_idle(self, idle_s: float) -> None:
        """Release a kept association after ``idle_s`` seconds without a send."""
        if self.link is not None:
            await asyncio.to_thread(self.link.release_if_idle, idle_s)

    def close(self) -> None:
        """Release the association and the HTTP connections."""
        if self.link is not None:
            self.link.close()
        self._http.clear()
