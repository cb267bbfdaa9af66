"""Stored bytes are verified on the way out, and encryption at rest is requested on every write."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import grpc
import pytest
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import PacsError
from pacs_storage.app import StorageApp
from pacs_storage.settings import StorageSettings
from pacs_testkit.channels import plain_aio_channel
from storage_testkit import address_of, modified_part10, sample_part10


async def test_corrupted_object_is_refused_with_data_loss(
    client: StorageClient, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    stored = await client.put(ref, data)
    # Damage the object behind the service's back, keeping its recorded metadata.
    head = raw_s3.head_object(Bucket=bucket_name, Key=stored.object.key)
    corrupt = modified_part10(data)
    raw_s3.put_object(
        Bucket=bucket_name, Key=stored.object.key, Body=corrupt, Metadata=head["Metadata"]
    )

    received: list[bytes] = []
    with pytest.raises(PacsError) as raised:
        async for chunk in client.get_stream(address_of(ref)):
            received.append(chunk)

    assert raised.value.code == grpc.StatusCode.DATA_LOSS
    # The caller never holds the complete (corrupt) object.
    assert len(b"".join(received)) < len(corrupt)


async def test_corruption_is_detected_on_a_chunked_read_too(
    start_app: Any, storage_settings: StorageSettings, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    app = await start_app(storage_settings.model_copy(update={"chunk_size": 4096}))
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as chan:
        client = StorageClient(chan, timeout=30)
        stored = await client.put(ref, data)
        head = raw_s3.head_object(Bucket=bucket_name, Key=stored.object.key)
        raw_s3.put_object(
            Bucket=bucket_name,
            Key=stored.object.key,
            Body=data[:-1] + bytes([data[-1] ^ 1]),
            Metadata=head["Metadata"],
        )
        received: list[bytes] = []
        with pytest.raises(PacsError) as raised:
            async for chunk in client.get_stream(address_of(ref)):
                received.append(chunk)

    assert raised.value.code == grpc.StatusCode.DATA_LOSS
    # Everything but the held-back last chunk arrived, then the stream failed.
    assert len(b"".join(received)) == len(data) - (len(data) % 4096 or 4096)


async def test_ranged_read_of_an_intact_object_still_works(
    client: StorageClient, tenant: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    await client.put(ref, data)

    assert await client.get(address_of(ref), 0, 132) == data[:132]


def record_headers(app: StorageApp) -> list[tuple[str, dict[str, str]]]:
    """Observe the S3 requests the service sends (operation name and HTTP headers)."""
    seen: list[tuple[str, dict[str, str]]] = []

    def before_send(request: Any, **kwargs: Any) -> None:
        operation = kwargs["event_name"].rsplit(".", 1)[-1]
        headers = {
            k.lower(): v.decode() if isinstance(v, bytes) else str(v)
            for k, v in request.headers.items()
        }
        seen.append((operation, headers))

    app.s3.meta.events.register("before-send.s3", before_send)
    return seen


@pytest.mark.parametrize(
    ("sse", "key_id", "expected"),
    [
        ("AES256", None, {"x-amz-server-side-encryption": "AES256"}),
        (
            "aws:kms",
            "alias/cloudpacs",
            {
                "x-amz-server-side-encryption": "aws:kms",
                "x-amz-server-side-encryption-aws-kms-key-id": "alias/cloudpacs",
            },
        ),
        ("none", None, {}),
    ],
)
async def test_every_write_requests_the_configured_encryption(
    start_app: Any,
    storage_settings: StorageSettings,
    tenant: str,
    sse: str,
    key_id: str | None,
    expected: dict[str, str],
) -> None:
    settings = storage_settings.model_copy(
        update={"sse": sse, "sse_kms_key_id": key_id, "multipart_threshold": 5 * 1024 * 1024}
    )
    app = await start_app(settings)
    seen = record_headers(app)
    small = sample_part10()
    big = small + bytes(6 * 1024 * 1024)  # multipart (above the threshold)
    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as chan:
        client = StorageClient(chan, timeout=30)
        ref = instance_ref_of(small, tenant)
        await client.put(ref, small)
        await client.put(ref, modified_part10(small))  # keeps the first as a version (copy)

        async def stream() -> Any:
            yield big

        await client.put(ref, stream())  # multipart to staging, then copied

    writes = [h for op, h in seen if op in {"PutObject", "CreateMultipartUpload", "CopyObject"}]
    assert {op for op, _ in seen} >= {"PutObject", "CreateMultipartUpload", "CopyObject"}
    for headers in writes:
        sse_headers = {k: v for k, v in headers.items() if k.startswith("x-amz-server-side")}
        assert sse_headers == expected


async def test_multipart_object_gets_a_full_object_sha256(
    start_app: Any, storage_settings: StorageSettings, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    app = await start_app(storage_settings.model_copy(update={"multipart_threshold": 5 << 20}))
    data = sample_part10() + bytes(11 << 20)
    ref = instance_ref_of(sample_part10(), tenant)

    async def stream() -> Any:
        for start in range(0, len(data), 1 << 20):
            yield data[start : start + (1 << 20)]

    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as chan:
        stored = await StorageClient(chan, timeout=30).put(ref, stream())

    head = raw_s3.head_object(Bucket=bucket_name, Key=stored.object.key, ChecksumMode="ENABLED")
    digest = hashlib.sha256(data).digest()
    assert head["ChecksumSHA256"] == base64.b64encode(digest).decode()
    assert head["Metadata"]["sha256"] == digest.hex()
    # Nothing is left in the staging area.
    listing = raw_s3.list_objects_v2(Bucket=bucket_name, Prefix="_uploads/")
    assert listing.get("KeyCount", 0) == 0
    assert raw_s3.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []
