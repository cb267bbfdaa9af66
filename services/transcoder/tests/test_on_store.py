"""The on-store policy end to end: storage announces InstanceStored on the real Kafka, the
transcoder's consumer writes a new version through storage and announces InstanceTranscoded;
the original stays readable as an earlier version, and the transcoder's own write is not
transcoded again."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.events import header
from pacs_common.settings import KafkaSettings
from pacs_transcoder.app import TranscoderApp
from pacs_transcoder.policy import PolicyRule
from pacs_transcoder.settings import TranscoderSettings
from pydicom import uid
from transcoder_events import InstanceEvents, TranscoderFactory
from transcoder_pixels import dataset_of, pixels_of
from transcoder_samples import PYDICOM_DATA, sample_bytes

_TRANSCODED = "pacs.events.v1.InstanceTranscoded"
_STORED = "pacs.events.v1.InstanceStored"


async def _consumed(app: TranscoderApp, record: ConsumerRecord[bytes, bytes]) -> None:
    """Wait until the transcoder's consumer committed past ``record``."""
    assert app.consumer is not None and app.consumer._consumer is not None
    partition = TopicPartition(record.topic, record.partition)
    for _ in range(1200):
        committed = await app.consumer._consumer.committed(partition)
        if committed is not None and committed > record.offset:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the transcoder did not consume the event")


def _of(kind: str, sop_instance_uid: str):  # type: ignore[no-untyped-def]
    def accept(record: ConsumerRecord[bytes, bytes]) -> bool:
        if header(record, "ce_type") != kind:
            return False
        message = (
            events_pb.InstanceTranscoded if kind == _TRANSCODED else events_pb.InstanceStored
        ).FromString(record.value or b"")
        return bool(message.object.instance.sop_instance_uid == sop_instance_uid)

    return accept


async def test_ct_becomes_htj2k_lossless_and_the_original_is_kept(
    start_transcoder: TranscoderFactory,
    storage_client: StorageClient,
    instance_events: InstanceEvents,
    tenant: str,
) -> None:
    app = await start_transcoder(
        consume_events=True,
        policy=[PolicyRule(tenant=tenant, modality="CT", transfer_syntax=uid.HTJ2KLossless)],
    )
    source = sample_bytes("ct-signed-16")
    ref = instance_ref_of(source, tenant)
    stored = await storage_client.put(ref, source)

    record = await instance_events.next(_of(_TRANSCODED, ref.sop_instance_uid), within=120)
    event = events_pb.InstanceTranscoded.FromString(record.value or b"")
    assert event.source_version_id == stored.object.version_id
    assert event.source_transfer_syntax_uid == uid.ExplicitVRLittleEndian
    assert event.object.instance.transfer_syntax_uid == uid.HTJ2KLossless
    assert event.object.size < event.source_size

    current = await storage_client.get(ref)
    assert dataset_of(current).file_meta.TransferSyntaxUID == uid.HTJ2KLossless
    assert np.array_equal(pixels_of(current), pixels_of(source))
    original = await storage_client.get(ref, version_id=event.source_version_id)
    assert original == source  # storage kept the original as an earlier version

    # Storage announced the transcoder's own write (before InstanceTranscoded, on the same
    # partition): once the consumer is past InstanceTranscoded it has seen it, and left it.
    await _consumed(app, record)
    head = await storage_client.head(ref)
    assert head.version_id == event.object.version_id  # nothing written after it
    with pytest.raises(TimeoutError):
        await instance_events.next(_of(_TRANSCODED, ref.sop_instance_uid), within=3)


async def test_modalities_without_a_rule_and_lossy_sources_are_kept(
    start_transcoder: TranscoderFactory,
    storage_client: StorageClient,
    instance_events: InstanceEvents,
    tenant: str,
) -> None:
    app = await start_transcoder(
        consume_events=True,
        policy=[
            PolicyRule(tenant=tenant, modality="CT", transfer_syntax=uid.HTJ2KLossless),
            PolicyRule(tenant=tenant, modality="MR", transfer_syntax=""),
        ],
    )
    mr = sample_bytes("mr-12")  # MR: kept by its rule
    ref = instance_ref_of(mr, tenant)
    first = await storage_client.put(ref, mr)
    record = await instance_events.next(_of(_STORED, ref.sop_instance_uid), within=60)
    await _consumed(app, record)
    assert (await storage_client.head(ref)).version_id == first.object.version_id


def test_a_lossy_rule_must_say_so() -> None:
    kafka = KafkaSettings(security_protocol="PLAINTEXT")  # only the policy is checked here
    with pytest.raises(ValueError, match="lossy"):
        TranscoderSettings(
            kafka=kafka, policy=[PolicyRule(modality="US", transfer_syntax=uid.JPEGBaseline8Bit)]
        )
    TranscoderSettings(
        kafka=kafka,
        policy=[PolicyRule(modality="US", transfer_syntax=uid.JPEGBaseline8Bit, lossy=True)],
    )


def test_a_rule_never_applies_to_its_own_output() -> None:
    for rule in (
        PolicyRule(modality="CT", transfer_syntax=uid.HTJ2KLossless),
        PolicyRule(modality="CT", transfer_syntax=uid.JPEGLSLossless, sources="any-lossless"),
    ):
        assert rule.applies_to(uid.ExplicitVRLittleEndian)
        assert not rule.applies_to(rule.transfer_syntax)
        assert not rule.applies_to(uid.JPEGBaseline8Bit)  # lossy sources are never re-encoded


async def test_an_instance_the_target_cannot_carry_is_kept_not_dead_lettered(
    start_transcoder: TranscoderFactory,
    storage_client: StorageClient,
    instance_events: InstanceEvents,
    tenant: str,
) -> None:
    app = await start_transcoder(
        consume_events=True,
        policy=[PolicyRule(tenant=tenant, modality="OT", transfer_syntax=uid.JPEGLSLossless)],
    )
    rgb32 = (PYDICOM_DATA / "SC_rgb_32bit.dcm").read_bytes()  # JPEG-LS carries 16 bits at most
    ref = instance_ref_of(rgb32, tenant)
    first = await storage_client.put(ref, rgb32)
    record = await instance_events.next(_of(_STORED, ref.sop_instance_uid), within=60)
    await _consumed(app, record)
    assert (await storage_client.head(ref)).version_id == first.object.version_id
    assert app.consumer is not None and app.consumer.stats.dead_lettered == 0
