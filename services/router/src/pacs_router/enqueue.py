"""Evaluate the rules on each ``InstanceStored`` and enqueue what matches.

Consumes ``pacs.instances.v1`` (group ``router``). For an instance of a tenant that has rules,
the header is taken from the event (or read from storage when the event has none), the
tenant's rules are evaluated (:mod:`pacs_router.matching`), and one ``InstanceRouted`` per
destination is published with ``acks=all`` on the destination's topic, keyed by the
StudyInstanceUID so that one study's instances reach the destination in the order they were
stored. The ``InstanceStored`` offset is committed only after every publish was acknowledged,
so a crash between the two enqueues the instance again: a destination may receive it twice,
which is harmless (a C-STORE or STOW-RS of the same SOP Instance replaces the same instance at
the peer).
"""

from __future__ import annotations

import logging

from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs.events.v1 import route_events_pb2 as route_pb
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import UnreadableDicomError, read_header
from pacs_common.errors import InvalidArgumentError, NotFoundError
from pacs_common.events import EventPublisher, event_type, header, now_rfc3339
from pacs_common.metrics import ROUTE_ENQUEUED
from pydicom.dataset import Dataset

from pacs_router.matching import matching_rules, parse_stored_time
from pacs_router.rules import RulesFile

log = logging.getLogger(__name__)

_STORED = event_type(events_pb.InstanceStored())


def route_topic(prefix: str, destination: str) -> str:
    """The queue of one destination: ``pacs.route.<destination>.v1`` by default."""
    return f"{prefix}{destination}.v1"


class RouteEnqueuer:
    """The handler of ``pacs.instances.v1`` records (one at a time, in order)."""

    def __init__(
        self,
        rules: RulesFile,
        storage: StorageClient,
        publisher: EventPublisher,
        topic_prefix: str,
    ) -> None:
        self.rules = rules
        self.storage = storage
        self.publisher = publisher
        self.topic_prefix = topic_prefix

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Route one event; other event types, and tenants without rules, are passed over.

        Raises:
            InvalidArgumentError: the event cannot be decoded (dead-lettered, never retried).
            UnavailableError: storage or Kafka is down (retried until they are back).
        """
        if header(record, "ce_type") != _STORED:
            return
        try:
            stored = events_pb.InstanceStored.FromString(record.value or b"")
        except DecodeError as exc:
            raise InvalidArgumentError(f"undecodable InstanceStored: {exc}") from exc
        info = stored.object
        rules = self.rules.tenants.get(info.instance.tenant)
        if not rules:
            return
        if stored.new_version:
            rules = [rule for rule in rules if rule.include_new_versions]
            if not rules:
                return
        dataset = await self._header(stored)
        if dataset is None:
            return
        matched = matching_rules(
            rules, dataset, parse_stored_time(info.stored_time), info.sending_ae_title
        )
        destinations: dict[str, str] = {}
        for rule in matched:
            for name in rule.destinations:
                destinations.setdefault(name, rule.name)
        now = now_rfc3339()
        for name, rule_name in destinations.items():
            routed = route_pb.InstanceRouted(
                object=info, destination=name, rule=rule_name, routed_time=now
            )
            await self.publisher.publish(
                route_topic(self.topic_prefix, name), info.instance.study_instance_uid, routed
            )
            ROUTE_ENQUEUED.labels(name).inc()
        if destinations:
            log.info(
                "instance routed",
                extra={"tenant": info.instance.tenant, "destinations": sorted(destinations)},
            )

    async def _header(self, stored: events_pb.InstanceStored) -> Dataset | None:
        """The instance's header: from the event, else read from storage (headers over
        storage's cap); None when the object is gone or is not readable DICOM."""
        part10 = stored.header_part10
        if not part10:
            try:
                part10 = await self.storage.get(
                    _ref(stored.object), version_id=stored.object.version_id
                )
            except NotFoundError:
                log.info("routed instance no longer stored; not routed")
                return None
        try:
            return read_header(part10)
        except UnreadableDicomError:
            log.warning("stored object is not readable DICOM; not routed")
            return None


def _ref(info: instance_pb2.ObjectInfo) -> instance_pb2.InstanceRef:
    return info.instance
