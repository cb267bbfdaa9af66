"""Helpers of the storage service tests: sample objects, events on Kafka, raw bucket access."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pacs.events.v1 import instance_events_pb2
from pacs.storage.v1 import storage_service_pb2
from pacs.type.v1 import instance_pb2
from pacs_common.events import TOPIC_INSTANCES, header
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def grant_request(
    ref: instance_pb2.InstanceRef, data: bytes, part_size: int = 0
) -> storage_service_pb2.GrantWriteRequest:
    """A write grant request for ``data``: one PUT, or parts of ``part_size`` bytes."""
    request = storage_service_pb2.GrantWriteRequest(
        instance=ref, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    if part_size:
        request.part_size = part_size
        request.part_sha256.extend(
            hashlib.sha256(data[start : start + part_size]).hexdigest()
            for start in range(0, len(data), part_size)
        )
    return request


def stored_keys(raw_s3: Any, bucket: str) -> list[str]:
    """The keys of the bucket's objects, without storage's bookkeeping: intent records
    (``_intents/``, settled by the reconciler, tested in ``test_storage_reconciler.py``) and
    SOP Instance UID claims (``_claims/``, tested in ``test_storage_uid_claims.py``)."""
    response = raw_s3.list_objects_v2(Bucket=bucket)
    return [
        item["Key"]
        for item in response.get("Contents", [])
        if not item["Key"].startswith(("_intents/", "_claims/"))
    ]


def intent_records(raw_s3: Any, bucket: str) -> list[str]:
    """Storage's intent records still in the bucket (its sentinel aside)."""
    response = raw_s3.list_objects_v2(Bucket=bucket, Prefix="_intents/")
    return [
        item["Key"]
        for item in response.get("Contents", [])
        if not item["Key"].endswith("~sentinel")
    ]


def sample_part10(name: str = "CT_small.dcm") -> bytes:
    """A real DICOM file bundled with pydicom."""
    path = get_testdata_file(name)
    assert path is not None
    with open(path, "rb") as handle:
        return handle.read()


def modified_part10(data: bytes) -> bytes:
    """The same instance (same UIDs) with one pixel changed: different bytes, same address."""
    dataset = dcmread(io.BytesIO(data))
    pixels = bytearray(dataset.PixelData)
    pixels[0] ^= 0xFF
    dataset.PixelData = bytes(pixels)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def marker_part10(data: bytes) -> bytes:
    """Another instance of the same study and series (a new SOP Instance UID): its event
    follows, on the same partition, every event of that study sent before it."""
    dataset = dcmread(io.BytesIO(data))
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def synthetic_part10(pixel_bytes: int) -> bytes:
    """A large Secondary Capture instance with ``pixel_bytes`` of random pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality = "OT"
    side = int((pixel_bytes // 2) ** 0.5)
    dataset.Rows = side
    dataset.Columns = pixel_bytes // 2 // side
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.PixelData = os.urandom(dataset.Rows * dataset.Columns * 2)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def address_of(ref: instance_pb2.InstanceRef) -> instance_pb2.InstanceRef:
    """Only the address part of a ref (what readers send)."""
    return instance_pb2.InstanceRef(
        tenant=ref.tenant,
        study_instance_uid=ref.study_instance_uid,
        series_instance_uid=ref.series_instance_uid,
        sop_instance_uid=ref.sop_instance_uid,
    )


@dataclass
class Event:
    """One consumed event."""

    record: ConsumerRecord[bytes, bytes]
    ce_type: str
    message: instance_events_pb2.InstanceStored | instance_events_pb2.InstanceDeleted

    def header(self, name: str) -> str | None:
        return header(self.record, name)


class InstanceEvents:
    """Reads pacs.instances.v1 from the end (positioned before the test acts)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.consumer = AIOKafkaConsumer(
            **kafka_client_options(kafka),
            group_id=f"test-storage-{uuid.uuid4().hex[:12]}",
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )

    async def start(self) -> None:
        admin = AIOKafkaAdminClient(**kafka_client_options(self.kafka))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC_INSTANCES, 3, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()
        await self.consumer.start()
        partitions = None
        for _ in range(50):
            await self.consumer._client.force_metadata_update()
            partitions = self.consumer.partitions_for_topic(TOPIC_INSTANCES)
            if partitions:
                break
            await asyncio.sleep(0.1)
        assert partitions, "topic pacs.instances.v1 has no partitions"
        assigned = [TopicPartition(TOPIC_INSTANCES, p) for p in partitions]
        self.consumer.assign(assigned)
        await self.consumer.seek_to_end(*assigned)
        for tp in assigned:
            await self.consumer.position(tp)  # resolve the seek before the test publishes

    async def stop(self) -> None:
        await self.consumer.stop()

    async def next(self, accept: Callable[[Event], bool], within: float = 15.0) -> Event:
        """The next event that ``accept`` approves (others are skipped)."""

        async def wait() -> Event:
            while True:
                record = await self.consumer.getone()
                event = decode(record)
                if event is not None and accept(event):
                    return event

        return await asyncio.wait_for(wait(), within)

    async def until_marker(
        self, accept: Callable[[Event], bool], marker_sop_instance_uid: str, within: float = 60.0
    ) -> list[Event]:
        """Every approved event before the one announcing ``marker_sop_instance_uid``.

        Exact counts without a timed drain: the test stores a marker instance of the same study
        last (:func:`marker_part10`); events are keyed by study, so they share a partition and
        the marker's event comes after every event the test caused before it.
        """
        found: list[Event] = []

        async def collect() -> list[Event]:
            while True:
                event = decode(await self.consumer.getone())
                if event is None or not accept(event):
                    continue
                message = event.message
                if message.object.instance.sop_instance_uid == marker_sop_instance_uid:
                    return found
                found.append(event)

        return await asyncio.wait_for(collect(), within)


def decode(record: ConsumerRecord[bytes, bytes]) -> Event | None:
    """Decode an InstanceStored/InstanceDeleted record by its CloudEvents type."""
    ce_type = header(record, "ce_type") or ""
    message: instance_events_pb2.InstanceStored | instance_events_pb2.InstanceDeleted
    if ce_type == "pacs.events.v1.InstanceStored":
        message = instance_events_pb2.InstanceStored.FromString(record.value or b"")
    elif ce_type == "pacs.events.v1.InstanceDeleted":
        message = instance_events_pb2.InstanceDeleted.FromString(record.value or b"")
    else:
        return None
    return Event(record, ce_type, message)


def for_tenant(
    tenant: str, ce_type: str = "pacs.events.v1.InstanceStored"
) -> Callable[[Event], bool]:
    """Accept events of one type about one tenant."""

    def accept(event: Event) -> bool:
        if event.ce_type != ce_type:
            return False
        message = event.message
        if isinstance(message, instance_events_pb2.InstanceStored):
            return message.object.instance.tenant == tenant
        return message.instance.tenant == tenant

    return accept
