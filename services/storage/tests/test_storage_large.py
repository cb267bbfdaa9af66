"""Large objects stream through Put and Get with multipart upload and bounded memory."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from storage_testkit import address_of, synthetic_part10

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def large_part10() -> bytes:
    """A 64 MiB Part 10 object (random pixel data)."""
    return synthetic_part10(64 * MIB)


async def digest_of_stream(client: StorageClient, ref: Any) -> tuple[str, int, int]:
    """SHA-256, size and largest chunk of a streamed Get, without keeping the bytes."""
    digest = hashlib.sha256()
    size = largest = 0
    async for chunk in client.get_stream(ref):
        digest.update(chunk)
        size += len(chunk)
        largest = max(largest, len(chunk))
    return digest.hexdigest(), size, largest


async def test_large_object_streamed_in_is_stored_and_read_back(
    client: StorageClient, tenant: str, large_part10: bytes, raw_s3: Any, bucket_name: str
) -> None:
    data = large_part10
    ref = instance_ref_of(data, tenant)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 3 * MIB):  # a size unrelated to the part size
            yield data[start : start + 3 * MIB]

    response = await client.put(ref, chunks())

    sha = hashlib.sha256(data).hexdigest()
    assert response.object.sha256 == sha
    assert response.object.size == len(data)
    assert await digest_of_stream(client, address_of(ref)) == (sha, len(data), MIB)
    head = raw_s3.head_object(Bucket=bucket_name, Key=response.object.key)
    assert head["ContentLength"] == len(data)


async def test_large_object_with_known_digest_goes_straight_to_its_key(
    client: StorageClient, tenant: str, large_part10: bytes, raw_s3: Any, bucket_name: str
) -> None:
    data = large_part10
    ref = instance_ref_of(data, tenant)

    response = await client.put(ref, data)  # bytes: the client sends size and SHA-256 first
    again = await client.put(ref, data)

    sha = hashlib.sha256(data).hexdigest()
    assert response.object.sha256 == sha
    assert again.already_existed
    assert await digest_of_stream(client, address_of(ref)) == (sha, len(data), MIB)
    assert (await client.get(address_of(ref), len(data) - 10, 0)) == data[-10:]
    assert raw_s3.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []
