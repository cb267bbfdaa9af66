"""Puts written to S3 while their stream arrives (``pacs_storage.streamed_put``).

Whatever the stream does against its announced size and digest, the bucket ends up with exactly
the bytes received, or with nothing: never a partial or altered object.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from pacs.storage.v1 import storage_service_pb2 as pb
from pacs.storage.v1 import storage_service_pb2_grpc as pb_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_storage.app import StorageApp
from pacs_storage.keys import object_key
from pacs_storage.settings import StorageSettings
from pacs_storage.streamed_put import RequestBodyPipe
from pacs_testkit.channels import plain_aio_channel
from storage_testkit import (
    address_of,
    modified_part10,
    sample_part10,
    stored_keys,
    synthetic_part10,
)


def stored_bytes(raw_s3: Any, bucket: str, ref: instance_pb2.InstanceRef) -> bytes:
    body: bytes = raw_s3.get_object(Bucket=bucket, Key=object_key(ref))["Body"].read()
    return body


async def put_raw(app: StorageApp, header: pb.PutHeader, chunks: list[bytes]) -> pb.PutResponse:
    async def requests() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(header=header)
        for chunk in chunks:
            yield pb.PutRequest(chunk=chunk)

    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        response: pb.PutResponse = await pb_grpc.StorageServiceStub(channel).Put(requests())
        return response


def in_pieces(data: bytes, size: int = 65_536) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


@pytest.mark.parametrize("announced_difference", [+1_000, -1_000])
async def test_a_wrong_size_announcement_still_stores_exactly_the_bytes_received(
    app: StorageApp, tenant: str, raw_s3: Any, bucket_name: str, announced_difference: int
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    header = pb.PutHeader(
        instance=ref,
        size_hint=len(data) + announced_difference,
        expected_sha256=hashlib.sha256(data).hexdigest(),
    )

    response = await put_raw(app, header, in_pieces(data, 4_096))

    assert not response.already_existed
    assert response.object.size == len(data)
    assert stored_bytes(raw_s3, bucket_name, ref) == data


async def test_a_stream_shorter_than_announced_but_whole_by_its_digest_is_a_new_object(
    app: StorageApp, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    """The deterministic form of the case above: S3 has every byte received before the
    stream ends. Cutting the streamed write's body short there let the server store those
    bytes (they match the announced SHA-256) after the write was reported failed, and the
    fallback then answered ``already_existed`` for the Put's own object."""
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    header = pb.PutHeader(
        instance=ref, size_hint=len(data) + 1_000, expected_sha256=hashlib.sha256(data).hexdigest()
    )

    async def requests() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(header=header)
        for chunk in in_pieces(data, 4_096):
            yield pb.PutRequest(chunk=chunk)
        await asyncio.sleep(0.2)  # the streamed write's bytes reach S3 before the end

    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        response: pb.PutResponse = await pb_grpc.StorageServiceStub(channel).Put(requests())

    assert not response.already_existed
    assert response.object.size == len(data)
    assert stored_bytes(raw_s3, bucket_name, ref) == data


async def test_the_object_is_written_while_its_stream_arrives_and_a_surplus_removes_it(
    app: StorageApp, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    """With size and digest announced, the object is in S3 before the stream ends (the
    overlap this is for). Bytes beyond the announced ones then make the Put invalid, and the
    object already written must be removed."""
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    header = pb.PutHeader(
        instance=ref, size_hint=len(data), expected_sha256=hashlib.sha256(data).hexdigest()
    )
    written_before_the_end = False

    async def requests() -> AsyncIterator[pb.PutRequest]:
        nonlocal written_before_the_end
        yield pb.PutRequest(header=header)
        yield pb.PutRequest(chunk=data)
        for _ in range(100):
            if await asyncio.to_thread(stored_keys, raw_s3, bucket_name):
                written_before_the_end = True
                break
            await asyncio.sleep(0.05)
        yield pb.PutRequest(chunk=b"surplus")

    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await pb_grpc.StorageServiceStub(channel).Put(requests())

    assert written_before_the_end
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stored_keys(raw_s3, bucket_name) == []


async def test_a_put_cancelled_mid_stream_stores_nothing_and_the_service_goes_on(
    app: StorageApp, client: StorageClient, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    data = synthetic_part10(2 * 1024 * 1024)
    ref = instance_ref_of(data, tenant)
    half_sent = asyncio.Event()

    async def requests() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(
            header=pb.PutHeader(
                instance=ref, size_hint=len(data), expected_sha256=hashlib.sha256(data).hexdigest()
            )
        )
        yield pb.PutRequest(chunk=data[: len(data) // 2])
        half_sent.set()
        await asyncio.Event().wait()  # the rest never comes

    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        call = pb_grpc.StorageServiceStub(channel).Put(requests())
        await half_sent.wait()
        await asyncio.sleep(0.3)  # let the half reach S3's side of the streamed write
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    # The abandoned write must neither leave an object nor hold the service up.
    other = sample_part10()
    stored = await client.put(instance_ref_of(other, tenant), other)
    assert stored.object.size == len(other)
    assert stored_keys(raw_s3, bucket_name) == [stored.object.key]


async def test_many_concurrent_puts_with_few_streaming_slots(
    start_app: Any,
    storage_settings: StorageSettings,
    tenant: str,
    raw_s3: Any,
    bucket_name: str,
) -> None:
    """More Puts at once than streamed writes allowed: the rest are received first; all land."""
    app = await start_app(storage_settings.model_copy(update={"max_streamed_puts": 2}))
    objects = [synthetic_part10(200_000) for _ in range(12)]
    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        client = StorageClient(channel)
        refs = [instance_ref_of(data, tenant) for data in objects]
        await asyncio.gather(
            *(client.put(ref, data) for ref, data in zip(refs, objects, strict=True))
        )

    for ref, data in zip(refs, objects, strict=True):
        assert stored_bytes(raw_s3, bucket_name, ref) == data


@pytest.mark.parametrize("max_streamed_puts", [0, 16])
async def test_repeat_and_new_version_with_and_without_streaming(
    start_app: Any,
    storage_settings: StorageSettings,
    tenant: str,
    raw_s3: Any,
    bucket_name: str,
    max_streamed_puts: int,
) -> None:
    app = await start_app(
        storage_settings.model_copy(update={"max_streamed_puts": max_streamed_puts})
    )
    first = sample_part10()
    second = modified_part10(first)
    ref = instance_ref_of(first, tenant)
    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        client = StorageClient(channel)
        original = await client.put(ref, first)
        repeated = await client.put(ref, first)
        replaced = await client.put(ref, second)
        _, old_chunks = await client.open(address_of(ref), version_id=original.object.version_id)
        old = b"".join([chunk async for chunk in old_chunks])

    assert [original.already_existed, repeated.already_existed, replaced.already_existed] == [
        False,
        True,
        False,
    ]
    assert repeated.object.version_id == original.object.version_id
    assert replaced.object.version_id != original.object.version_id
    assert stored_bytes(raw_s3, bucket_name, ref) == second
    assert old == first


def test_body_pipe_hands_exactly_the_announced_bytes_to_a_reader_thread() -> None:
    pipe = RequestBodyPipe(size=10)
    read: list[bytes] = []

    def reader() -> None:
        while chunk := pipe.read(4):
            read.append(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    pipe.feed(b"abcdef")
    pipe.feed(b"ghij")
    pipe.feed(b"surplus, never read")
    thread.join(timeout=5)

    assert not thread.is_alive()
    assert read == [b"abcd", b"ef", b"ghij"]


def test_body_pipe_pads_a_short_body_to_the_announced_size() -> None:
    pipe = RequestBodyPipe(size=10)
    pipe.feed(b"abc")
    read: list[bytes] = []

    def reader() -> None:
        while chunk := pipe.read(4):
            read.append(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    pipe.pad()
    thread.join(timeout=5)

    assert not thread.is_alive()
    assert b"".join(read) == b"abc" + bytes(7)
