"""Write and read grants on the real S3 server and Kafka: bytes go straight to S3, storage
signs, checks and announces (``pacs_storage.grants``, ``pacs_common.clients.direct``)."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pytest
import urllib3
from pacs.storage.v1 import storage_service_pb2 as pb
from pacs_common.clients.direct import DirectStorage
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import (
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pacs_storage.settings import StorageSettings
from pydicom import dcmread
from storage_testkit import (
    InstanceEvents,
    for_tenant,
    grant_request,
    modified_part10,
    sample_part10,
    synthetic_part10,
)

MIB = 1024 * 1024


@pytest.fixture
def direct(client: StorageClient) -> DirectStorage:
    """Grants-based access with a low multipart threshold, so tests exercise parts."""
    return DirectStorage(client, multipart_threshold=12 * MIB, part_size=5 * MIB)


def _send(signed: pb.SignedRequest, body: bytes, **extra_headers: str) -> Any:
    headers = {**dict(signed.headers), **extra_headers}
    return urllib3.request(signed.method, signed.url, body=body, headers=headers, retries=False)


async def test_a_granted_write_is_stored_announced_with_its_header_and_readable(
    direct: DirectStorage, client: StorageClient, events: InstanceEvents, tenant: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    response = await direct.put(ref, data)
    event = await events.next(for_tenant(tenant))

    assert not response.already_existed
    assert response.object.sha256 == hashlib.sha256(data).hexdigest()
    assert response.object.size == len(data)
    assert event.message.object == response.object
    header = dcmread(io.BytesIO(event.message.header_part10))
    assert header.SOPInstanceUID == ref.sop_instance_uid
    assert "PixelData" not in header
    # Stored under the instance's key: the streaming Get and a read grant both see it.
    assert await client.get(ref) == data
    assert await direct.get(ref) == data


async def test_the_sending_ae_title_is_recorded_with_the_object_and_announced(
    direct: DirectStorage, client: StorageClient, events: InstanceEvents, tenant: str
) -> None:
    """Through a grant (the gateway's C-STORE) and through Put; a value that is no AE title is
    left out, never a reason to refuse the image."""
    granted = instance_ref_of(data := synthetic_part10(4096), tenant)
    await direct.put(granted, data, sending_ae_title="CT_SCANNER_1 ")
    event = await events.next(for_tenant(tenant))
    assert event.message.object.sending_ae_title == "CT_SCANNER_1"
    assert (await client.head(granted)).sending_ae_title == "CT_SCANNER_1"

    streamed = instance_ref_of(other := synthetic_part10(4096), tenant)
    await client.put(streamed, other, sending_ae_title="MR\\BAD")
    event = await events.next(for_tenant(tenant))
    assert event.message.object.sending_ae_title == ""
    await client.put(streamed, other, sending_ae_title="MR_2")  # same bytes: nothing new
    assert (await client.head(streamed)).sending_ae_title == ""


async def test_s3_refuses_bytes_other_than_the_granted_ones(
    client: StorageClient, tenant: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    grant = await client.grant_write(grant_request(ref, data))

    corrupted = bytearray(data)
    corrupted[-1] ^= 0xFF
    refused = _send(grant.requests[0], bytes(corrupted))

    assert refused.status == 400
    assert b"BadDigest" in refused.data
    with pytest.raises(FailedPreconditionError, match="nothing was uploaded"):
        await client.commit_write(
            pb.CommitWriteRequest(
                instance=ref,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                grant_token=grant.grant_token,
            )
        )
    with pytest.raises(NotFoundError):
        await client.head(ref)


async def test_a_grant_cannot_be_reused_for_another_key_or_without_its_headers(
    client: StorageClient, tenant: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    grant = await client.grant_write(grant_request(ref, data))
    signed = grant.requests[0]

    without_headers = pb.SignedRequest(method="PUT", url=signed.url)
    other_key = pb.SignedRequest(
        method="PUT",
        url=signed.url.replace(ref.sop_instance_uid, ref.sop_instance_uid + ".9"),
        headers=signed.headers,
    )
    without_checksum = _send(without_headers, data)
    other_key_response = _send(other_key, data)

    assert without_checksum.status == 403
    assert other_key_response.status == 403


async def test_a_commit_is_not_announced_twice_as_new_and_identical_bytes_already_existed(
    direct: DirectStorage, events: InstanceEvents, tenant: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    first = await direct.put(ref, data)
    # The write grant's PUT now meets If-None-Match: the commit finds the same bytes.
    second = await direct.put(ref, data)
    announced = [await events.next(for_tenant(tenant)) for _ in range(2)]

    assert not first.already_existed
    assert second.already_existed
    assert second.object.version_id == first.object.version_id
    assert [event.message.object.sha256 for event in announced] == [first.object.sha256] * 2


async def test_other_bytes_for_a_stored_instance_become_a_new_version_through_put(
    direct: DirectStorage, client: StorageClient, tenant: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    changed = modified_part10(data)

    first = await direct.put(ref, data)
    second = await direct.put(ref, changed)

    assert second.object.sha256 == hashlib.sha256(changed).hexdigest()
    assert second.object.version_id != first.object.version_id
    assert await direct.get(ref) == changed
    assert await direct.get(ref, version_id=first.object.version_id) == data


async def test_a_large_object_goes_up_in_parts_and_comes_back_verified(
    direct: DirectStorage, client: StorageClient, events: InstanceEvents, tenant: str
) -> None:
    data = synthetic_part10(13 * MIB)
    ref = instance_ref_of(data, tenant)

    response = await direct.put(ref, data)
    event = await events.next(for_tenant(tenant))
    head = await client.head(ref)

    assert not response.already_existed
    assert head.sha256 == hashlib.sha256(data).hexdigest()
    assert head.size == len(data)
    assert event.message.object.sha256 == head.sha256
    assert await direct.get(ref) == data


async def test_a_commit_before_every_part_was_sent_is_refused_and_changes_nothing(
    client: StorageClient, tenant: str
) -> None:
    data = synthetic_part10(11 * MIB)
    ref = instance_ref_of(data, tenant)
    part = 5 * MIB
    request = grant_request(ref, data, part)
    grant = await client.grant_write(request)
    first = grant.requests[0]
    assert _send(first, data[first.offset : first.offset + first.length]).status == 200

    with pytest.raises(FailedPreconditionError, match="1 of 3 parts"):
        await client.commit_write(
            pb.CommitWriteRequest(
                instance=ref, size=len(data), sha256=request.sha256, grant_token=grant.grant_token
            )
        )
    with pytest.raises(NotFoundError):
        await client.head(ref)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "xyz"}, "sha256 must be 64 hex digits"),
        ({"size": 0}, "size must be between"),
        ({"part_size": 1024, "part_sha256": ["0" * 64]}, "part_size must be at least"),
        ({"part_size": 5 * MIB, "part_sha256": ["0" * 64] * 5}, "1 parts of"),
    ],
)
async def test_a_bad_grant_request_is_refused(
    client: StorageClient, tenant: str, change: dict[str, Any], message: str
) -> None:
    data = sample_part10()
    request = grant_request(instance_ref_of(data, tenant), data)
    for name, value in change.items():
        if isinstance(value, list):
            getattr(request, name).extend(value)
        else:
            setattr(request, name, value)

    with pytest.raises(InvalidArgumentError, match=message):
        await client.grant_write(request)


async def test_a_forged_grant_token_is_refused(client: StorageClient, tenant: str) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    with pytest.raises(InvalidArgumentError, match="grant_token"):
        await client.commit_write(
            pb.CommitWriteRequest(
                instance=ref,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                grant_token=b"\xff\xff not a token",
            )
        )


async def test_a_reader_detects_bytes_changed_behind_storage(
    direct: DirectStorage, raw_s3: Any, storage_settings: StorageSettings, tenant: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    stored = await direct.put(ref, data)
    # Someone rewrites the object in the bucket, keeping its metadata (the recorded SHA-256).
    head = raw_s3.head_object(Bucket=storage_settings.s3.bucket, Key=stored.object.key)
    raw_s3.put_object(
        Bucket=storage_settings.s3.bucket,
        Key=stored.object.key,
        Body=data[:-1] + bytes([data[-1] ^ 0xFF]),
        Metadata=head["Metadata"],
    )

    with pytest.raises(DataLossError):
        await direct.get(ref)
    info, chunks = await direct.open(ref)
    with pytest.raises(DataLossError):
        async for _ in chunks:
            pass
    assert info.sha256 == stored.object.sha256


async def test_a_streamed_read_through_a_grant_gives_the_stored_bytes(
    client: StorageClient, tenant: str
) -> None:
    direct = DirectStorage(client, read_chunk_size=4096)
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    await direct.put(ref, data)

    info, chunks = await direct.open(ref)
    parts = [chunk async for chunk in chunks]

    assert b"".join(parts) == data
    assert len(parts) > 1
    assert info.size == len(data)


async def test_a_read_grant_of_a_missing_instance_is_not_found(
    direct: DirectStorage, tenant: str
) -> None:
    ref = instance_ref_of(sample_part10(), tenant)

    with pytest.raises(NotFoundError):
        await direct.get(ref)


def _with_long_header(data: bytes, extra_bytes: int) -> bytes:
    """The sample with a private element of ``extra_bytes`` before its pixel data."""
    dataset = dcmread(io.BytesIO(data))
    block = dataset.private_block(0x0009, "CLOUDPACS TEST", create=True)
    block.add_new(0x01, "OB", b"\x00" * extra_bytes)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


async def test_a_header_longer_than_the_first_read_is_still_carried_in_the_event(
    direct: DirectStorage, events: InstanceEvents, tenant: str
) -> None:
    data = _with_long_header(sample_part10(), 100_000)
    ref = instance_ref_of(data, tenant)

    await direct.put(ref, data)
    event = await events.next(for_tenant(tenant))

    header = dcmread(io.BytesIO(event.message.header_part10))
    assert len(event.message.header_part10) > 100_000
    assert header.SOPInstanceUID == ref.sop_instance_uid
    assert "PixelData" not in header
