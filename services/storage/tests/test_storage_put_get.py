"""Put, Get and Head through a real gRPC channel against the real S3 server and Kafka."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import urllib.request
from typing import Any

import grpc
import pytest
from pacs.storage.v1 import storage_service_pb2 as pb
from pacs.storage.v1 import storage_service_pb2_grpc as pb_grpc
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import PacsError
from pacs_storage.app import StorageApp
from pacs_testkit.channels import plain_aio_channel
from storage_testkit import address_of, sample_part10


async def test_put_then_get_returns_the_same_bytes_and_sha256(
    client: StorageClient, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    response = await client.put(ref, data)

    sha = hashlib.sha256(data).hexdigest()
    assert not response.already_existed
    assert response.object.sha256 == sha
    assert response.object.size == len(data)
    assert response.object.key == (
        f"{tenant}/{ref.study_instance_uid}/{ref.series_instance_uid}/{ref.sop_instance_uid}.dcm"
    )
    assert response.object.version_id
    assert await client.get(address_of(ref)) == data
    # The object carries its SHA-256 as S3 checksum and as metadata, with its descriptors.
    head = raw_s3.head_object(Bucket=bucket_name, Key=response.object.key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(sha)).decode()
    assert head["Metadata"]["sha256"] == sha
    assert head["Metadata"]["sop-class-uid"] == ref.sop_class_uid
    assert head["Metadata"]["transfer-syntax-uid"] == ref.transfer_syntax_uid


async def test_head_describes_the_stored_object(client: StorageClient, tenant: str) -> None:
    data = sample_part10("MR_small.dcm")
    ref = instance_ref_of(data, tenant)
    stored = await client.put(ref, data)

    info = await client.head(address_of(ref))

    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.version_id == stored.object.version_id
    assert info.instance.sop_class_uid == ref.sop_class_uid
    assert info.instance.transfer_syntax_uid == ref.transfer_syntax_uid
    assert info.stored_time.endswith("Z")


async def test_get_streams_chunks_and_describes_the_object_first(
    client: StorageClient, tenant: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    await client.put(ref, data)

    info, chunks = await client.open(address_of(ref))
    received = [chunk async for chunk in chunks]

    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(received) == data


async def test_chunks_of_a_streamed_put_are_reassembled(client: StorageClient, tenant: str) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    async def pieces() -> Any:
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    response = await client.put(ref, pieces())

    assert response.object.sha256 == hashlib.sha256(data).hexdigest()
    assert await client.get(address_of(ref)) == data


@pytest.mark.parametrize(
    ("offset", "length"), [(0, 132), (128, 4), (1000, 0), (39_000, 10_000), (5, 1)]
)
async def test_range_read_returns_exactly_that_range(
    client: StorageClient, tenant: str, offset: int, length: int
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    await client.put(ref, data)

    info, chunks = await client.open(address_of(ref), offset, length)
    received = b"".join([chunk async for chunk in chunks])

    end = offset + length if length else len(data)
    assert received == data[offset:end]
    assert info.size == len(data)


async def test_range_starting_beyond_the_end_is_invalid(client: StorageClient, tenant: str) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    await client.put(ref, data)

    with pytest.raises(PacsError) as raised:
        await client.get(address_of(ref), offset=len(data) + 10)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_missing_instance_is_not_found(client: StorageClient, tenant: str) -> None:
    ref = address_of(instance_ref_of(sample_part10(), tenant))

    with pytest.raises(PacsError) as on_get:
        await client.get(ref)
    with pytest.raises(PacsError) as on_head:
        await client.head(ref)

    assert on_get.value.code == grpc.StatusCode.NOT_FOUND
    assert on_head.value.code == grpc.StatusCode.NOT_FOUND


async def test_service_created_its_bucket_at_start(
    app: StorageApp, raw_s3: Any, bucket_name: str
) -> None:
    raw_s3.head_bucket(Bucket=bucket_name)  # raises if the bucket does not exist


async def test_raw_stub_put_with_header_then_chunks(app: StorageApp, tenant: str) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    async def requests() -> Any:
        yield pb.PutRequest(header=pb.PutHeader(instance=ref, size_hint=len(data)))
        yield pb.PutRequest(chunk=data[:100])
        yield pb.PutRequest(chunk=data[100:])

    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as chan:
        stub = pb_grpc.StorageServiceStub(chan)
        response = await stub.Put(requests())
        head = await stub.Head(pb.HeadRequest(instance=address_of(ref)))

    assert response.object.sha256 == hashlib.sha256(data).hexdigest()
    assert head.object.size == len(data)


async def test_metrics_endpoint_counts_s3_requests_and_calls(
    start_app: Any, storage_settings: Any, tenant: str
) -> None:
    app = await start_app(storage_settings.model_copy(update={"metrics_port": 0}))
    data = sample_part10()
    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as chan:
        await StorageClient(chan).put(instance_ref_of(data, tenant), data)
    assert app.metrics is not None

    url = f"http://127.0.0.1:{app.metrics.port}/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(scrape)

    assert 'pacs_s3_request_duration_seconds_count{operation="put_object"}' in text
    assert 'method="Put"' in text
