"""Write and delete intents: the record that lets storage repair a write it never announced.

The gap this closes: an object is complete in S3 but its ``InstanceStored`` was never published
(storage died between the two, a granted PUT was never committed because the writer died, or
Kafka failed and the sender gave up). Nothing else would ever announce it.

The mechanism is an **intent record written before the change**, in the same bucket:

* before an object is written (``Put``, or ``GrantWrite`` before it signs anything) storage
  writes ``_intents/<time>-<id>`` naming the key, the SHA-256 and the version id; before a
  ``Delete``, one naming the key to remove;
* once the change is announced, the intent is removed (off the request's critical path, many
  at a time: one DeleteObjects request per half second);
* :class:`Reconciler` lists ``_intents/`` and takes every intent older than
  ``reconcile_after_s``: a write whose object is present with the intent's SHA-256 is announced
  (again, if it was: consumers are idempotent by SOP Instance UID); one whose object is absent
  or other bytes is over (abandoned grant, or replaced since; the replacement has its own
  intent); a delete whose object is gone is announced. Then the intent is removed.

Why this and not a scan: the ``_intents/`` prefix holds only changes in flight and the few that
failed, never the archive, so a pass costs one LIST page at any bucket size (100 million objects
included), where comparing recent keys with the event log would need a time-ordered listing S3
does not have. The price is one small PUT before each change, and a share of one batched
DeleteObjects after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pacs.type.v1 import instance_pb2
from pacs_common.errors import PacsError
from pacs_common.metrics import (
    STORAGE_OLDEST_UNANNOUNCED,
    STORAGE_RECONCILED,
    STORAGE_UNANNOUNCED,
)
from pacs_common.periodic import PeriodicTask

from pacs_storage.announcer import Announcer
from pacs_storage.bucket import Bucket
from pacs_storage.event_header import event_header, prefix_to_keep
from pacs_storage.keys import instance_of_key, object_key, versions_prefix
from pacs_storage.versions import META_SHA256, object_info, sha256_b64

log = logging.getLogger(__name__)

INTENTS_PREFIX = "_intents/"  # one flat folder, kept by its sentinel (Bucket.keep_folder)
_TIME = "%Y%m%dT%H%M%S"
# Removals of settled intents are gathered this long and sent as one request.
_CLEAR_BATCH_S = 0.5
_RECORD_KEY = re.compile(r"^_intents/[0-9]{8}T[0-9]{6}-[0-9a-f]{32}$")


def is_record_key(value: str) -> bool:
    """True for a key :meth:`IntentLog.record` makes (a grant token cannot name another)."""
    return bool(_RECORD_KEY.match(value))


@dataclass(frozen=True)
class Intent:
    """One change storage is about to make."""

    kind: str  # "write", "delete" or "delete-all" (every version)
    key: str
    sha256: str = ""
    version_id: str = ""
    upload_id: str = ""

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Intent:
        fields = json.loads(data)
        return cls(**{name: str(fields.get(name, "")) for name in cls.__dataclass_fields__})


class IntentLog:
    """Writes and clears intent records in the bucket."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self._to_clear: list[str] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, intent: Intent) -> str:
        """Write ``intent`` before the change; returns its record's key.

        Raises:
            UnavailableError: S3 is unreachable (then the change must not be made).
        """
        await self.bucket.keep_folder(INTENTS_PREFIX)
        moment = datetime.now(UTC).strftime(_TIME)
        record_key = f"{INTENTS_PREFIX}{moment}-{uuid.uuid4().hex}"
        body = intent.encode()
        await self.bucket.put(record_key, body, sha256_b64(body), {}, None)
        return record_key

    def clear_later(self, record_key: str) -> None:
        """Remove an intent once its change was announced, without waiting: removals are
        gathered and sent as one DeleteObjects request per ``_CLEAR_BATCH_S`` (a failure only
        leaves work for the reconciler, which then finds the change announced)."""
        if not is_record_key(record_key):
            return
        self._to_clear.append(record_key)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon(), name="intent-clear")

    async def _flush_soon(self) -> None:
        await asyncio.sleep(_CLEAR_BATCH_S)
        await self._flush()

    async def _flush(self) -> None:
        while self._to_clear:
            batch, self._to_clear = self._to_clear[:1000], self._to_clear[1000:]
            with contextlib.suppress(PacsError):
                await self.bucket.delete_many(batch)

    async def drain(self) -> None:
        """Send the removals still gathered (at stop)."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self._flush()


class Reconciler:
    """Settles intents older than ``after_s`` every ``interval_s`` (see the module docstring)."""

    def __init__(
        self,
        bucket: Bucket,
        announcer: Announcer,
        *,
        after_s: float,
        interval_s: float,
        header_cap: int,
        abandon_after_s: float,
    ) -> None:
        self.bucket = bucket
        self.announcer = announcer
        self.after_s = after_s
        self.interval_s = interval_s
        self.header_cap = header_cap
        self.abandon_after_s = abandon_after_s
        self._loop = PeriodicTask("reconciler", self.reconcile_once, interval_s, log)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def reconcile_once(self) -> int:
        """One pass; returns how many intents were settled."""
        now = datetime.now(UTC)
        threshold = now - timedelta(seconds=self.after_s)
        settled = 0
        pending = 0
        oldest: datetime | None = None
        token = ""
        while True:
            items, token = await self.bucket.list(INTENTS_PREFIX, 1000, token)
            for item in items:
                # S3 keeps LastModified to the second: count the record as written at the end
                # of that second, never older than it is.
                written = item.last_modified + timedelta(seconds=1)
                if written > threshold or not is_record_key(item.key):
                    continue
                pending += 1
                oldest = written if oldest is None else min(oldest, written)
                if await self._settle(item.key, (now - written).total_seconds()):
                    settled += 1
                    pending -= 1
            if not token:
                break
        STORAGE_UNANNOUNCED.set(pending)
        age = (now - oldest).total_seconds() if oldest is not None and pending else 0.0
        STORAGE_OLDEST_UNANNOUNCED.set(age)
        return settled

    async def _settle(self, record_key: str, age_s: float) -> bool:
        """Announce what the intent names if it happened; remove the intent. False when it
        could not be settled now (S3 or Kafka down, or a write that may still be under way)."""
        started = time.monotonic()
        try:
            reader = await self.bucket.open(record_key)
            try:
                body = await reader.read(64 * 1024)
            finally:
                reader.close()
            intent = Intent.decode(body)
        except PacsError:
            return False
        except (ValueError, TypeError):
            log.warning("unreadable intent record removed", extra={"object_key": record_key})
            await self.bucket.delete(record_key)
            return True
        ref = instance_of_key(intent.key)
        try:
            if ref is None:
                outcome = "foreign"
            elif intent.kind.startswith("delete"):
                outcome = await self._settle_delete(intent, ref)
            else:
                outcome = await self._settle_write(intent, ref, age_s)
                if outcome == "write-under-way":
                    return False
            await self.bucket.delete(record_key)
        except PacsError as exc:
            log.warning("intent not settled yet: %s", exc.message)
            return False
        STORAGE_RECONCILED.labels(outcome).inc()
        log.info(
            "intent settled",
            extra={"outcome": outcome, "seconds": round(time.monotonic() - started, 3)},
        )
        return True

    async def _settle_write(
        self, intent: Intent, ref: instance_pb2.InstanceRef, age_s: float
    ) -> str:
        stored = await self.bucket.head(intent.key)
        # A Put without expected_sha256 records none: whatever is stored then is announced.
        other_bytes = intent.sha256 and stored and stored.metadata.get(META_SHA256) != intent.sha256
        if (stored is None or other_bytes) and age_s < self.abandon_after_s:
            # A large upload can take longer than the delay: only once its grant expired can no
            # more bytes arrive, and only then is its multipart upload safe to abort.
            return "write-under-way"
        if stored is None or other_bytes:
            if intent.upload_id:
                await self.bucket.abort_multipart(intent.key, intent.upload_id)
            return "write-not-made"
        keep = prefix_to_keep(self.header_cap)
        prefix = b""
        if keep:
            reader = await self.bucket.open(intent.key, 0, keep - 1)
            try:
                prefix = await reader.read(keep)
            finally:
                reader.close()
        header = event_header(prefix, stored.size, self.header_cap)
        await self.announcer.instance_stored(object_info(ref, stored), False, header)
        return "write-announced"

    async def _settle_delete(self, intent: Intent, ref: instance_pb2.InstanceRef) -> str:
        if await self.bucket.head(intent.key) is not None:
            return "delete-not-made"
        if intent.kind == "delete-all":
            await remove_earlier_versions(self.bucket, ref)
        await self.announcer.instance_deleted(ref, all_versions=intent.kind == "delete-all")
        return "delete-announced"


async def remove_earlier_versions(bucket: Bucket, ref: instance_pb2.InstanceRef) -> int:
    """Remove an instance's earlier versions (storage's own, under its versions prefix) and,
    on a bucket with S3 versioning, every S3 version and delete marker of its keys; returns
    how many of storage's versions there were. The current object is the caller's. (A bucket
    whose versioning was turned on in the last minute may keep S3 versions of a deletion.)"""
    removed = await bucket.delete_prefix(versions_prefix(ref))
    if await bucket.versioning():
        await bucket.purge_versions(object_key(ref), key=object_key(ref))
        await bucket.purge_versions(versions_prefix(ref))
    return removed
