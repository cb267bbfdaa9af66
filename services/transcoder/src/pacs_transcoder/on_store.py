"""The on-store policy: consume ``InstanceStored``, write a new representation, announce it.

For each stored instance the first matching rule of :mod:`pacs_transcoder.policy` decides.
When it asks for another syntax, the transcoder reads exactly the version the event names,
transcodes it, writes the result through ``storage.Put`` (storage keeps the replaced object as
an earlier version, see ``services/storage/README.md``), and publishes ``InstanceTranscoded``.
Storage's own ``InstanceStored`` for that write then reaches this consumer too, and is left
alone: the instance is now in the rule's target syntax (why that always holds: the module
docstring of :mod:`pacs_transcoder.policy`).

Idempotent and restartable: an event whose version is no longer current is only re-announced
(if the current version is in the rule's syntax, a crash may have come between the write and
the announcement) — never transcoded again. A lossy rule writes a new instance (new SOP
Instance UID, PS3.3 C.7.6.1.1.5) beside the original, which stays as it is. An instance the
target syntax cannot carry stays as stored (outcome ``not-encodable``), rather than filling the
dead-letter topic; events that cannot be read are dead-lettered.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence

from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import UnreadableDicomError, read_header
from pacs_common.errors import InvalidArgumentError, NotFoundError
from pacs_common.events import TOPIC_INSTANCES, EventPublisher, event_type, header, now_rfc3339
from pacs_common.metrics import TRANSCODE_POLICY_OUTCOMES
from pydicom import dcmread
from pydicom.tag import Tag

from pacs_transcoder.conversion import Converted, Converter, Spool
from pacs_transcoder.errors import NotEncodableError, UnsupportedImageError
from pacs_transcoder.policy import PolicyRule, rule_for

log = logging.getLogger(__name__)

_STORED = event_type(events_pb.InstanceStored())
_MODALITY = Tag(0x0008, 0x0060)


def _modality_of(part10_header: bytes) -> str | None:
    if not part10_header:
        return None
    try:
        return str(read_header(part10_header, [_MODALITY]).get("Modality") or "")
    except UnreadableDicomError:
        return None


def _sha256(spool: Spool) -> str:
    spool.seek(0)
    digest = hashlib.sha256()
    while chunk := spool.read(1024 * 1024):
        digest.update(chunk)
    spool.seek(0)
    return digest.hexdigest()


class OnStoreHandler:
    """Handles one ``pacs.instances.v1`` record (other event types are ignored)."""

    def __init__(
        self,
        rules: Sequence[PolicyRule],
        storage: StorageClient,
        converter: Converter,
        publisher: EventPublisher,
    ) -> None:
        self.rules = list(rules)
        self.storage = storage
        self.converter = converter
        self.publisher = publisher

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply the policy to one event.

        Raises:
            InvalidArgumentError: the event cannot be parsed (dead-lettered at once).
            UnavailableError: storage or Kafka is down (retried).
        """
        if header(record, "ce_type") != _STORED:
            return
        try:
            stored = events_pb.InstanceStored.FromString(record.value or b"")
        except DecodeError as exc:
            raise InvalidArgumentError(f"unreadable InstanceStored: {exc}") from exc
        info = stored.object
        ref = info.instance
        syntax = ref.transfer_syntax_uid
        candidates = [r for r in self.rules if r.tenant in ("*", ref.tenant)]
        if not any(r.applies_to(syntax) for r in candidates):
            TRANSCODE_POLICY_OUTCOMES.labels("kept").inc()
            return
        modality = _modality_of(stored.header_part10)
        if modality is not None:
            rule = rule_for(self.rules, ref.tenant, modality)
            if rule is None or not rule.applies_to(syntax):
                TRANSCODE_POLICY_OUTCOMES.labels("kept").inc()
                return
        await self._apply(info, modality)

    async def _apply(self, info: instance_pb2.ObjectInfo, modality: str | None) -> None:
        ref = info.instance
        try:
            current = await self.storage.head(ref)
        except NotFoundError:
            TRANSCODE_POLICY_OUTCOMES.labels("gone").inc()
            return  # deleted since: nothing to do
        if current.version_id != info.version_id:
            await self._reannounce(info, current, modality)
            return
        _, chunks = await self.storage.open(ref, version_id=info.version_id)
        source = await self.converter.spool(chunks)
        try:
            if modality is None:
                modality = await asyncio.to_thread(_modality_in, source)
            rule = rule_for(self.rules, ref.tenant, modality)
            if rule is None or not rule.applies_to(ref.transfer_syntax_uid):
                TRANSCODE_POLICY_OUTCOMES.labels("kept").inc()
                return
            try:
                converted = await self.converter.convert(source, rule.transfer_syntax, rule.lossy)
            except (UnsupportedImageError, NotEncodableError) as exc:
                # The instance stays as stored: a policy cannot apply to what the target syntax
                # cannot carry (say 32-bit samples); that is an outcome, not a failed event.
                TRANSCODE_POLICY_OUTCOMES.labels("not-encodable").inc()
                log.warning("instance kept: %s", exc.message, extra={"rule": rule.name})
                return
        finally:
            source.close()
        try:
            await self._write(info, rule, converted)
        finally:
            converted.close()

    async def _write(
        self, info: instance_pb2.ObjectInfo, rule: PolicyRule, converted: Converted
    ) -> None:
        ref = info.instance
        target = instance_pb2.InstanceRef()
        target.CopyFrom(ref)
        target.sop_instance_uid = converted.result.sop_instance_uid
        target.transfer_syntax_uid = converted.result.transfer_syntax
        digest = await asyncio.to_thread(_sha256, converted.output)
        response = await self.storage.put(
            target,
            converted.chunks(1024 * 1024),
            size_hint=converted.size,
            expected_sha256=digest,
        )
        await self._announce(response.object, info, rule)
        TRANSCODE_POLICY_OUTCOMES.labels("transcoded").inc()
        log.info(
            "instance transcoded on store",
            extra={
                "rule": rule.name,
                "size_before": info.size,
                "size_after": response.object.size,
            },
        )

    async def _reannounce(
        self,
        info: instance_pb2.ObjectInfo,
        current: instance_pb2.ObjectInfo,
        modality: str | None,
    ) -> None:
        """The event's version was replaced. If the replacement is what this policy writes,
        announce it again (the first announcement may have been lost in a crash)."""
        rule = rule_for(self.rules, info.instance.tenant, modality) if modality else None
        if rule is not None and current.instance.transfer_syntax_uid == rule.transfer_syntax:
            await self._announce(current, info, rule)
        TRANSCODE_POLICY_OUTCOMES.labels("superseded").inc()

    async def _announce(
        self, written: instance_pb2.ObjectInfo, source: instance_pb2.ObjectInfo, rule: PolicyRule
    ) -> None:
        event = events_pb.InstanceTranscoded(
            object=written,
            source_version_id=source.version_id,
            source_transfer_syntax_uid=source.instance.transfer_syntax_uid,
            rule=rule.name,
            source_size=source.size,
            transcoded_time=now_rfc3339(),
        )
        await self.publisher.publish(TOPIC_INSTANCES, written.instance.study_instance_uid, event)


def _modality_in(source: Spool) -> str:
    source.seek(0)
    try:
        dataset = dcmread(source, stop_before_pixels=True, specific_tags=[_MODALITY])
    except Exception as exc:
        raise InvalidArgumentError(f"stored object unreadable: {exc}") from exc
    finally:
        source.seek(0)
    return str(dataset.get("Modality") or "")
