"""End to end: DCMTK sends real files to the gateway; each acknowledged instance is in S3 with
the right SHA-256, is found by findscu and QueryService, and was announced with CloudEvents
headers."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pacs.events.v1 import instance_events_pb2
from pacs.query.v1 import query_service_pb2, query_service_pb2_grpc
from pacs.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.auth import Role
from pacs_common.events import TOPIC_INSTANCES
from pacs_common.kafka_client import kafka_client_options
from pacs_common.local import infra_environment, sync_channel
from pacs_common.settings import KafkaSettings
from pacs_testkit.hydra import Hydra
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.e2e.e2e_support import RunningStack, findscu, run_dcmtk, s3_client

pytestmark = pytest.mark.e2e

# Real files in the transfer syntaxes a PACS meets: uncompressed (implicit, explicit, big
# endian), deflated, RLE, JPEG lossless, JPEG-LS, JPEG 2000 lossless and lossy.
SAMPLES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "rtplan.dcm",
    "image_dfl.dcm",
    "SC_rgb_rle.dcm",
    "JPEG-LL.dcm",
    "JPEG2000.dcm",
    "US1_J2KR.dcm",
    "emri_small.dcm",
    "waveform_ecg.dcm",
]


# DCMTK storescu options proposing each compressed syntax (storescu --help, DCMTK 3.6.7).
STORESCU_PROPOSAL = {
    "1.2.840.10008.1.2.1.99": "--propose-deflated",
    "1.2.840.10008.1.2.5": "--propose-rle",
    "1.2.840.10008.1.2.4.70": "--propose-lossless",
    "1.2.840.10008.1.2.4.90": "--propose-j2k-lossless",
    "1.2.840.10008.1.2.4.91": "--propose-j2k-lossy",
    "1.2.840.10008.1.2.4.80": "--propose-jls-lossless",
}


def sample_paths() -> list[Path]:
    paths = [Path(str(get_testdata_file(name))) for name in SAMPLES]
    sop_uids = [dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths]
    assert len(set(sop_uids)) == len(sop_uids), "samples must be distinct instances"
    return paths


def instance_ref(path: Path, tenant: str) -> instance_pb2.InstanceRef:
    ds = dcmread(path, stop_before_pixels=True)
    return instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        sop_instance_uid=ds.SOPInstanceUID,
    )


def _kafka(bootstrap: str) -> dict[str, Any]:
    """aiokafka options for the brokers at ``bootstrap``, with the credentials of the env."""
    return kafka_client_options(KafkaSettings(bootstrap=bootstrap))


async def topic_partitions(bootstrap: str) -> set[int]:
    """Partitions of the instances topic (the producer API fetches the topic's metadata)."""
    producer = AIOKafkaProducer(**_kafka(bootstrap))
    await producer.start()
    try:
        return set(await producer.partitions_for(TOPIC_INSTANCES))
    finally:
        await producer.stop()


def end_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    async def read() -> dict[TopicPartition, int]:
        consumer = AIOKafkaConsumer(**_kafka(bootstrap))
        await consumer.start()
        try:
            partitions = await topic_partitions(bootstrap)
            tps = [TopicPartition(TOPIC_INSTANCES, p) for p in partitions]
            return dict(await consumer.end_offsets(tps)) if tps else {}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def events_since(
    bootstrap: str, start: dict[TopicPartition, int]
) -> list[tuple[dict[str, str], bytes]]:
    async def read() -> list[tuple[dict[str, str], bytes]]:
        consumer = AIOKafkaConsumer(**_kafka(bootstrap), enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = await topic_partitions(bootstrap)
            tps = [TopicPartition(TOPIC_INSTANCES, p) for p in partitions]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, start.get(tp, 0))
            ends = await consumer.end_offsets(tps)
            records: list[tuple[dict[str, str], bytes]] = []

            async def behind() -> bool:
                return any([await consumer.position(tp) < ends[tp] for tp in tps])

            while await behind():
                batch = await consumer.getmany(timeout_ms=1000)
                for messages in batch.values():
                    for record in messages:
                        headers = {k: bytes(v).decode() for k, v in record.headers}
                        records.append((headers, bytes(record.value or b"")))
            return records
        finally:
            await consumer.stop()

    return asyncio.run(read())


@pytest.fixture(scope="module")
def sent(
    e2e_stack: RunningStack, infra_env: dict[str, str]
) -> tuple[list[Path], dict[TopicPartition, int]]:
    """Send the samples once with storescu; return them and the topic offsets before sending."""
    before = end_offsets(infra_env["PACS_KAFKA_BOOTSTRAP"])
    paths = sample_paths()
    # storescu proposes uncompressed syntaxes unless told otherwise, one compressed syntax per
    # run: send each group with the option that proposes its syntax, so nothing is re-encoded.
    groups: dict[str, list[str]] = {}
    for path in paths:
        syntax = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        groups.setdefault(STORESCU_PROPOSAL.get(syntax, ""), []).append(str(path))
    for option, files in groups.items():
        result = run_dcmtk(
            [
                "storescu",
                *([option] if option else []),
                "-aec",
                e2e_stack.ae_title,
                "-aet",
                "MODALITY1",
                "127.0.0.1",
                str(e2e_stack.dicom_port),
                *files,
            ]
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Failed" not in result.stdout + result.stderr, result.stdout + result.stderr
    return paths, before


def test_echoscu_is_answered(e2e_stack: RunningStack) -> None:
    result = run_dcmtk(
        ["echoscu", "-aec", e2e_stack.ae_title, "127.0.0.1", str(e2e_stack.dicom_port)]
    )
    assert result.returncode == 0, result.stderr


def test_every_acknowledged_instance_is_in_s3_with_its_sha256(
    e2e_stack: RunningStack, infra_env: dict[str, str], sent: tuple[list[Path], object]
) -> None:
    paths, _ = sent
    s3 = s3_client(infra_env)
    with sync_channel(f"127.0.0.1:{e2e_stack.storage_port}") as channel:
        storage = storage_service_pb2_grpc.StorageServiceStub(channel)
        for path in paths:
            head = storage.Head(
                storage_service_pb2.HeadRequest(instance=instance_ref(path, e2e_stack.tenant))
            )
            obj = s3.get_object(Bucket=e2e_stack.bucket, Key=head.object.key)
            body = obj["Body"].read()
            assert hashlib.sha256(body).hexdigest() == head.object.sha256
            assert head.object.size == len(body)
            stored = dcmread(io.BytesIO(body))
            original = dcmread(path)
            assert stored.SOPInstanceUID == original.SOPInstanceUID
            # storescu may re-encode an uncompressed dataset into the syntax the association
            # accepted; it can never re-encode compressed pixel data, which must arrive as sent.
            if original.file_meta.TransferSyntaxUID.is_compressed:
                assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
            if "PixelData" in original:
                assert stored.PixelData == original.PixelData, path.name


def wait_for_studies(
    e2e_stack: RunningStack, study_uids: set[str], timeout_s: float = 60
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    # An application of the stack's tenant, with a token from the local hydra.
    token = Hydra(infra_environment()).metadata(e2e_stack.tenant, [Role.QUERY])
    with sync_channel(f"127.0.0.1:{e2e_stack.indexer_port}") as channel:
        query = query_service_pb2_grpc.QueryServiceStub(channel)
        while True:
            reply = query.FindStudies(
                query_service_pb2.FindStudiesRequest(
                    query=query_service_pb2.Query(
                        tenant=e2e_stack.tenant,
                        match={
                            "StudyInstanceUID": "\\".join(sorted(study_uids)),
                            "PatientName": "",
                        },
                    )
                ),
                metadata=token,
            )
            found = [json.loads(d) for d in reply.datasets]
            uids = {d["0020000D"]["Value"][0] for d in found}
            if uids >= study_uids or time.monotonic() > deadline:
                assert uids == study_uids
                return found
            time.sleep(0.5)


def test_query_service_finds_every_study(
    e2e_stack: RunningStack, sent: tuple[list[Path], object]
) -> None:
    paths, _ = sent
    study_uids = {dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in paths}
    found = wait_for_studies(e2e_stack, study_uids)
    ct = dcmread(paths[0], stop_before_pixels=True)
    ct_study = next(d for d in found if d["0020000D"]["Value"][0] == ct.StudyInstanceUID)
    assert ct_study["00100010"]["Value"][0]["Alphabetic"] == str(ct.PatientName)


def test_findscu_finds_every_study(
    e2e_stack: RunningStack, sent: tuple[list[Path], object], tmp_path: Path
) -> None:
    paths, _ = sent
    study_uids = {dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in paths}
    wait_for_studies(e2e_stack, study_uids)
    answered = {
        d.StudyInstanceUID
        for d in findscu(
            e2e_stack,
            tmp_path / "all",
            "QueryRetrieveLevel=STUDY",
            "StudyInstanceUID",
            "PatientName",
            "StudyDate",
        )
    }
    assert study_uids <= answered
    # Wildcard matching on the patient name through DICOM as well.
    ct = dcmread(paths[0], stop_before_pixels=True)
    prefix = str(ct.PatientName)[:3] + "*"
    matched = findscu(
        e2e_stack,
        tmp_path / "wildcard",
        "QueryRetrieveLevel=STUDY",
        "StudyInstanceUID",
        f"PatientName={prefix}",
    )
    assert ct.StudyInstanceUID in {d.StudyInstanceUID for d in matched}
    assert all(str(d.PatientName).startswith(prefix[:-1]) for d in matched)


def test_instance_stored_events_carry_cloudevents_headers(
    e2e_stack: RunningStack,
    infra_env: dict[str, str],
    sent: tuple[list[Path], dict[TopicPartition, int]],
) -> None:
    paths, before = sent
    records = events_since(infra_env["PACS_KAFKA_BOOTSTRAP"], before)
    ours: dict[str, dict[str, str]] = {}
    for headers, value in records:
        if headers.get("ce_type") != "pacs.events.v1.InstanceStored":
            continue
        event = instance_events_pb2.InstanceStored.FromString(value)
        if event.object.instance.tenant == e2e_stack.tenant:
            ours[event.object.instance.sop_instance_uid] = headers
            assert event.object.sha256 and event.object.key
    for path in paths:
        sop = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert sop in ours, f"no InstanceStored for {path.name}"
        headers = ours[sop]
        for name in ("ce_id", "ce_source", "ce_type", "ce_time", "content-type", "traceparent"):
            assert headers.get(name), f"{name} missing"
        assert headers["content-type"] == "application/protobuf"
