"""One study per SOP Instance UID: the claim storage makes before an instance's first byte.

A SOP Instance UID names one instance for ever (PS3.3 C.12.1.1.1), but storage keys objects by
study (:mod:`pacs_storage.keys`), so the same UID sent under another study would become a
second object, one of the two unreachable by UID (an orphan). The gateway refuses such a store
when its recent instances or the index know the UID, but the index lags the writes by seconds
and another gateway process's writes are not in this one's memory: only a check at the store,
made atomic by S3, closes that window.

The claim is one small object per tenant and UID, ``_claims/{tenant}~{sop_uid}``, holding the
study and series UID it belongs to. Before a write (``GrantWrite``, or ``Put`` before it
receives anything) storage creates it with a create-only PUT (``If-None-Match: *``):

* created: the first write of this UID; go on;
* present, same study: a resend, a retry or a new version; the version rules decide;
* present, another study: refused (ALREADY_EXISTS) and nothing is written; unless the claim is
  stale: older than the longest a granted write may take and with no object at its address
  (a write that never happened, or an instance removed without its claim). A stale claim is
  replaced under ``If-Match`` its ETag, so of two senders taking it over only one wins.

Claims of one UID are serialized within a storage process; between replicas the S3 server's
preconditions decide, which AWS S3 evaluates atomically and versitygw does not (two creates at
the very same instant through two replicas can, rarely, both succeed there).

``Delete`` with every version removes the claim when it names the deleted instance's study.

Keys: one flat folder with a sentinel, like ``_intents/`` (a POSIX-backed S3 server removes a
folder emptied by a delete, and a write into it at that moment fails). Tenants are
``[a-z0-9-]`` and UIDs digits and dots, so ``~`` cannot occur in either and no two claims'
keys collide. Listing and reindexing skip the folder (:func:`pacs_storage.keys.instance_of_key`
matches only instance keys).

Cost: one PUT of ~150 bytes per write (a GET too when a UID is resent), sent concurrently with
the write's intent record. Measured by ``bench_ingest.py`` (400 CT slices through grants, two
runs each way, 2 cores): storage +2.1 to 3.4 ms CPU per instance (boto3's per-request cost),
the one-association round trip +3.6 ms (on 2 cores the two PUTs' CPU does not overlap), and
8 associations 13-18 % slower. ``uid_claims=false`` removes it where the sending systems
guarantee UID uniqueness.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

from pacs.type.v1 import instance_pb2
from pacs_common.errors import AlreadyExistsError, NotFoundError

from pacs_storage.bucket import Bucket, WriteConflictError
from pacs_storage.intents import Intent, IntentLog
from pacs_storage.keys import object_key
from pacs_storage.locks import KeyLocks
from pacs_storage.versions import sha256_b64

log = logging.getLogger(__name__)

CLAIMS_PREFIX = "_claims/"
# Reading a claim that another writer replaces at the same moment: read it again this often.
_ATTEMPTS = 3
# A claim is ~150 bytes; anything longer is not one of ours and is read as unreadable.
_MAX_CLAIM_BYTES = 4096


class OtherStudyError(AlreadyExistsError):
    """The SOP Instance UID is stored (or being stored) under another study."""


def claim_key(ref: instance_pb2.InstanceRef) -> str:
    """The key of the claim on ``ref``'s SOP Instance UID within its tenant."""
    return f"{CLAIMS_PREFIX}{ref.tenant}~{ref.sop_instance_uid}"


class UidClaims:
    """Claims SOP Instance UIDs for one study each (see the module docstring)."""

    def __init__(self, bucket: Bucket, stale_after_s: float) -> None:
        """Args:
        stale_after_s: age after which a claim whose instance was never stored may be
            taken over (at least the grant TTL: a granted PUT may still arrive until then).
        """
        self.bucket = bucket
        self.stale_after = timedelta(seconds=stale_after_s)
        self._locks = KeyLocks()

    async def claim(self, ref: instance_pb2.InstanceRef) -> None:
        """Claim ``ref``'s SOP Instance UID for its study, or find it claimed by the same one.

        Raises:
            OtherStudyError: another study holds the UID.
            UnavailableError: S3 is unreachable (then nothing may be written).
        """
        await self.bucket.keep_folder(CLAIMS_PREFIX)
        key = claim_key(ref)
        # One claim of a UID at a time in this process: S3 settles the race between replicas,
        # but versitygw checks If-None-Match non-atomically (two creates at the same instant
        # can both succeed, measured 1 in 30), so within a replica a lock settles it.
        async with self._locks.hold(key):
            await self._claim(ref, key)

    async def _claim(self, ref: instance_pb2.InstanceRef, key: str) -> None:
        body = json.dumps(
            {
                "study": ref.study_instance_uid,
                "series": ref.series_instance_uid,
                "time": datetime.now(UTC).isoformat(),
            }
        ).encode()
        condition = {"IfNoneMatch": "*"}
        for _ in range(_ATTEMPTS):
            try:
                await self.bucket.put(key, body, sha256_b64(body), {}, condition)
                return
            except WriteConflictError:
                pass
            held = await self._read(key)
            if held is None:
                condition = {"IfNoneMatch": "*"}  # removed meanwhile: create it again
                continue
            holder, etag, claimed_at = held
            if holder.study_instance_uid == ref.study_instance_uid:
                return
            if not await self._is_stale(holder, claimed_at):
                raise OtherStudyError("SOP Instance UID already stored in another study")
            log.warning("taking over a stale SOP Instance UID claim", extra={"claim_key": key})
            condition = {"IfMatch": etag}
        raise OtherStudyError("SOP Instance UID claimed by another study at the same moment")

    async def release(self, ref: instance_pb2.InstanceRef) -> None:
        """Remove the claim on ``ref``'s UID if it names ``ref``'s study (every version of
        the instance was deleted)."""
        held = await self._read(claim_key(ref))
        if held is not None and held[0].study_instance_uid == ref.study_instance_uid:
            await self.bucket.delete(claim_key(ref))

    async def _read(self, key: str) -> tuple[instance_pb2.InstanceRef, str, datetime] | None:
        """The instance a claim names, its ETag and when it was made; None if absent."""
        try:
            reader = await self.bucket.open(key)
        except NotFoundError:
            return None
        try:
            raw = await reader.read(_MAX_CLAIM_BYTES)
        finally:
            reader.close()
        tenant, sop_instance_uid = key.removeprefix(CLAIMS_PREFIX).split("~", 1)
        try:
            content = json.loads(raw)
            holder = instance_pb2.InstanceRef(
                tenant=tenant,
                study_instance_uid=str(content["study"]),
                series_instance_uid=str(content["series"]),
                sop_instance_uid=sop_instance_uid,
            )
            claimed_at = datetime.fromisoformat(str(content["time"]))
        except (ValueError, KeyError, TypeError):
            # Not one of ours (written by hand?): treat it as old, so the object decides.
            log.warning("unreadable SOP Instance UID claim", extra={"claim_key": key})
            holder = instance_pb2.InstanceRef(tenant=tenant, sop_instance_uid=sop_instance_uid)
            claimed_at = datetime.min.replace(tzinfo=UTC)
        return holder, reader.info.etag, claimed_at

    async def _is_stale(self, holder: instance_pb2.InstanceRef, claimed_at: datetime) -> bool:
        """True when the claim is old and nothing is stored at the address it names."""
        if datetime.now(UTC) - claimed_at < self.stale_after:
            return False
        if not holder.study_instance_uid or not holder.series_instance_uid:
            return True
        return await self.bucket.head(object_key(holder)) is None


async def claim_and_record(
    claims: UidClaims | None,
    ref: instance_pb2.InstanceRef,
    intents: IntentLog,
    intent: Intent,
) -> str:
    """Claim ``ref``'s UID and record the write's intent, both before any byte moves and
    concurrently (two small PUTs, one round trip); returns the intent record's key.

    Raises:
        OtherStudyError: the UID belongs to another study (the intent is cleared again).
        UnavailableError: S3 is unreachable.
    """
    if claims is None:
        return await intents.record(intent)
    claimed, recorded = await asyncio.gather(
        claims.claim(ref), intents.record(intent), return_exceptions=True
    )
    if isinstance(claimed, BaseException):
        if isinstance(recorded, str):
            intents.clear_later(recorded)
        raise claimed
    if isinstance(recorded, BaseException):
        raise recorded
    return recorded
