"""One study per SOP Instance UID, decided at the store (``pacs_storage.uid_claims``), and a
tenant's refusal of other bytes through the streamed Put (``PutHeader.refuse_other_bytes``);
on the real S3 server and Kafka."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pacs.type.v1 import instance_pb2
from pacs_common.clients.direct import DirectStorage
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import AlreadyExistsError, NotFoundError
from pacs_storage.keys import object_key
from pacs_storage.uid_claims import claim_key
from pydicom import dcmread
from pydicom.uid import generate_uid
from storage_testkit import address_of, modified_part10, sample_part10, stored_keys


def in_another_study(data: bytes) -> bytes:
    """The same instance (same SOP Instance UID) filed under a new study and series."""
    dataset = dcmread(io.BytesIO(data))
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def fresh_instance() -> bytes:
    """The sample with a SOP Instance UID of its own (no other test has it)."""
    dataset = dcmread(io.BytesIO(sample_part10()))
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture
def direct(client: StorageClient) -> DirectStorage:
    return DirectStorage(client)


@pytest.mark.parametrize("write_path", ["put", "grant"])
async def test_a_uid_of_one_study_is_refused_under_another(
    client: StorageClient,
    direct: DirectStorage,
    tenant: str,
    raw_s3: Any,
    bucket_name: str,
    write_path: str,
) -> None:
    """Through Put (nothing received) and through GrantWrite (nothing signed)."""
    write = client.put if write_path == "put" else direct.put
    first = fresh_instance()
    stored = await write(instance_ref_of(first, tenant), first)
    other = in_another_study(first)
    other_ref = instance_ref_of(other, tenant)

    with pytest.raises(AlreadyExistsError, match="another study"):
        await write(other_ref, other)

    assert stored_keys(raw_s3, bucket_name) == [stored.object.key]
    with pytest.raises(NotFoundError):
        await client.head(address_of(other_ref))


async def test_two_studies_sending_one_uid_at_the_same_moment_store_exactly_one(
    client: StorageClient, direct: DirectStorage, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    """No index and no gateway memory can settle this one: both writes start before either
    is stored. The claim's create-only PUT lets exactly one through, whichever path each took."""
    first = fresh_instance()
    second = in_another_study(first)

    outcomes = await asyncio.gather(
        client.put(instance_ref_of(first, tenant), first),
        direct.put(instance_ref_of(second, tenant), second),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, AlreadyExistsError)]
    stored = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(refused) == 1 and len(stored) == 1, outcomes
    assert stored_keys(raw_s3, bucket_name) == [stored[0].object.key]


async def test_the_same_study_resends_and_replaces_as_before(
    client: StorageClient, tenant: str
) -> None:
    first = fresh_instance()
    ref = instance_ref_of(first, tenant)
    await client.put(ref, first)

    again = await client.put(ref, first)
    replaced = await client.put(ref, modified_part10(first))

    assert again.already_existed
    assert replaced.new_version


async def test_deleting_every_version_frees_the_uid_for_another_study(
    client: StorageClient, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    first = fresh_instance()
    first_ref = instance_ref_of(first, tenant)
    await client.put(first_ref, first)
    await client.delete(address_of(first_ref), all_versions=True)
    other = in_another_study(first)

    stored = await client.put(instance_ref_of(other, tenant), other)

    assert stored_keys(raw_s3, bucket_name) == [stored.object.key]


async def test_deleting_only_the_current_object_keeps_the_uid_with_its_study(
    client: StorageClient, tenant: str
) -> None:
    first = fresh_instance()
    first_ref = instance_ref_of(first, tenant)
    await client.put(first_ref, first)
    await client.put(first_ref, modified_part10(first))  # the first stays as a version
    await client.delete(address_of(first_ref))
    other = in_another_study(first)

    with pytest.raises(AlreadyExistsError):
        await client.put(instance_ref_of(other, tenant), other)


def _write_claim(
    raw_s3: Any, bucket: str, ref: instance_pb2.InstanceRef, study: str, age: timedelta
) -> None:
    body = json.dumps(
        {"study": study, "series": generate_uid(), "time": (datetime.now(UTC) - age).isoformat()}
    )
    raw_s3.put_object(Bucket=bucket, Key=claim_key(ref), Body=body.encode())


async def test_an_old_claim_whose_instance_was_never_stored_is_taken_over(
    client: StorageClient, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    """A write that claimed the UID and then never happened (its sender died) must not
    block the UID for ever: once older than any granted write may take, and with nothing
    stored at its address, the claim goes to the next study."""
    data = fresh_instance()
    ref = instance_ref_of(data, tenant)
    _write_claim(raw_s3, bucket_name, ref, generate_uid(), age=timedelta(days=1))

    stored = await client.put(ref, data)

    assert stored.object.key == object_key(ref)
    claim = json.loads(raw_s3.get_object(Bucket=bucket_name, Key=claim_key(ref))["Body"].read())
    assert claim["study"] == ref.study_instance_uid


async def test_a_recent_claim_is_respected_even_before_its_instance_is_stored(
    client: StorageClient, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    """Another writer claimed the UID a moment ago and its bytes are still on the way."""
    data = fresh_instance()
    ref = instance_ref_of(data, tenant)
    _write_claim(raw_s3, bucket_name, ref, generate_uid(), age=timedelta(seconds=1))

    with pytest.raises(AlreadyExistsError):
        await client.put(ref, data)

    assert stored_keys(raw_s3, bucket_name) == []


async def test_refuse_other_bytes_leaves_the_stored_instance_alone(
    client: StorageClient, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    """A tenant that refuses new versions, through the streamed Put (IngestService uploads)."""
    first = fresh_instance()
    ref = instance_ref_of(first, tenant)
    stored = await client.put(ref, first)

    with pytest.raises(AlreadyExistsError, match="other bytes"):
        await client.put(ref, modified_part10(first), refuse_other_bytes=True)
    again = await client.put(ref, first, refuse_other_bytes=True)

    assert again.already_existed
    assert (await client.head(address_of(ref))).sha256 == stored.object.sha256
    assert stored_keys(raw_s3, bucket_name) == [stored.object.key]  # no version was kept
