"""Routing rules: every stored instance of a source tenant that matches a rule is copied,
de-identified, into the rule's project target tenant, driven by ``InstanceStored`` events.

The consumer has its own group (``pacs-deid-routing``) and dead-letter topic: an instance that
cannot be de-identified (unreadable, burned-in text without Clean Pixel Data) is a permanent
failure and goes there with the reason; a storage or Kafka outage is retried. Copies are
deterministic, so redelivery writes the same object again. A target tenant is never a source of
its own project (settings refuse it), so copies are not copied again.
"""

from __future__ import annotations

import io
import logging
import re
import warnings

from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs_common.errors import InvalidArgumentError
from pacs_common.events import event_type, header
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pacs_deid.operations import Copier
from pacs_deid.options import parse_options
from pacs_deid.settings import RoutingRule

log = logging.getLogger(__name__)

_STORED = event_type(events_pb.InstanceStored())


def matches(rule: RoutingRule, ds: Dataset) -> bool:
    """Whether an instance's header satisfies every condition of ``rule``."""
    if rule.modalities and str(ds.get("Modality", "")).upper() not in {
        m.upper() for m in rule.modalities
    }:
        return False
    if rule.sop_class_uids and str(ds.get("SOPClassUID", "")) not in rule.sop_class_uids:
        return False
    if rule.series_description and not re.search(
        rule.series_description, str(ds.get("SeriesDescription", "")), re.IGNORECASE
    ):
        return False
    return not (
        rule.study_description
        and not re.search(rule.study_description, str(ds.get("StudyDescription", "")), re.I)
    )


class RoutingHandler:
    """Handles one record of ``pacs.instances.v1``."""

    def __init__(self, rules: list[RoutingRule], copier: Copier) -> None:
        self.rules = rules
        self.copier = copier
        self.copied = 0

    async def __call__(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Copy the instance for every rule it matches (nothing for other events)."""
        if header(record, "ce_type") != _STORED:
            return
        try:
            event = events_pb.InstanceStored.FromString(record.value or b"")
        except DecodeError as exc:
            raise InvalidArgumentError(f"undecodable InstanceStored: {exc}") from exc
        source = event.object.instance
        candidates = [r for r in self.rules if r.source_tenant == source.tenant]
        if not candidates:
            return
        data = await self.copier.storage.get(source)
        ds = _header(event.header_part10 or data)
        for rule in candidates:
            if not matches(rule, ds):
                continue
            project = self.copier.deid.project(rule.project)
            options = parse_options(rule.options if rule.options is not None else project.options)
            await self.copier.copy(rule.project, options, source, f"rule:{rule.name}", data)
            self.copied += 1
            log.info("routing rule copied an instance", extra={"rule": rule.name})


def _header(data: bytes) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgumentError(f"stored instance is not readable DICOM: {exc}") from exc
