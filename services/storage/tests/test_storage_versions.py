"""Idempotent writes and versions: same bytes write nothing, different bytes keep the old."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from pacs.events.v1 import instance_events_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_storage.app import StorageApp
from pacs_storage.keys import version_key
from pacs_storage.versions import object_metadata
from storage_testkit import (
    InstanceEvents,
    address_of,
    for_tenant,
    marker_part10,
    modified_part10,
    sample_part10,
)


def keys_under(raw_s3: Any, bucket: str, prefix: str) -> list[str]:
    response = raw_s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in response.get("Contents", []))


async def test_identical_bytes_write_nothing_new(
    client: StorageClient, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    first = await client.put(ref, data)
    before = raw_s3.head_object(Bucket=bucket_name, Key=first.object.key)

    again = await client.put(ref, data)

    after = raw_s3.head_object(Bucket=bucket_name, Key=first.object.key)
    assert again.already_existed
    assert again.object == first.object
    assert after["LastModified"] == before["LastModified"]
    assert keys_under(raw_s3, bucket_name, f"{tenant}/") == [first.object.key]


async def test_different_bytes_become_a_new_version_and_the_old_stays_readable(
    client: StorageClient, events: InstanceEvents, tenant: str
) -> None:
    original = sample_part10()
    changed = modified_part10(original)
    ref = instance_ref_of(original, tenant)
    assert instance_ref_of(changed, tenant) == ref and changed != original

    first = await client.put(ref, original)
    second = await client.put(ref, changed)
    marker = marker_part10(original)  # stored last: its event ends the count
    await client.put(instance_ref_of(marker, tenant), marker)
    announced = await events.until_marker(
        for_tenant(tenant), instance_ref_of(marker, tenant).sop_instance_uid
    )

    assert not second.already_existed
    assert second.object.version_id != first.object.version_id
    assert second.object.sha256 == hashlib.sha256(changed).hexdigest()
    # The current version is the new one; the earlier one is still there by its id.
    assert await client.get(address_of(ref)) == changed
    assert await client.get(address_of(ref), version_id=first.object.version_id) == original
    assert await client.get(address_of(ref), version_id=second.object.version_id) == changed
    old = await client.head(address_of(ref), version_id=first.object.version_id)
    assert old.sha256 == first.object.sha256
    assert old.version_id == first.object.version_id
    # Both writes were announced; the second as a new version.
    messages = [e.message for e in announced]
    assert all(isinstance(m, instance_events_pb2.InstanceStored) for m in messages)
    assert [(m.object.version_id, m.new_version) for m in messages] == [  # type: ignore[union-attr]
        (first.object.version_id, False),
        (second.object.version_id, True),
    ]


async def test_three_versions_are_all_kept(client: StorageClient, tenant: str) -> None:
    v1 = sample_part10()
    v2 = modified_part10(v1)
    v3 = modified_part10(v1[:-2] + b"\x01\x02")
    ref = instance_ref_of(v1, tenant)

    ids = [(await client.put(ref, data)).object.version_id for data in (v1, v2, v3)]

    assert len(set(ids)) == 3
    for version_id, data in zip(ids, (v1, v2, v3), strict=True):
        assert await client.get(address_of(ref), version_id=version_id) == data
    assert await client.get(address_of(ref)) == v3


async def test_concurrent_puts_of_one_instance_keep_every_version(
    client: StorageClient, tenant: str
) -> None:
    original = sample_part10()
    ref = instance_ref_of(original, tenant)
    versions = [original + bytes([number]) for number in range(8)]
    await client.put(ref, versions[0])

    results = await asyncio.gather(*(client.put(ref, data) for data in versions[1:]))

    kept = [
        await client.get(address_of(ref), version_id=result.object.version_id) for result in results
    ]
    assert kept == versions[1:]
    assert await client.get(address_of(ref)) in versions[1:]


async def test_a_replica_that_loses_a_race_keeps_the_winner_as_a_version(
    app: StorageApp, client: StorageClient, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    # Another replica replaces the instance between this one's read and its write: the
    # conditional copy/write fails, the service reads again and keeps both earlier versions.
    original = sample_part10()
    ref = instance_ref_of(original, tenant)
    first = await client.put(ref, original)
    intruder = original + b"other replica"
    intruder_sha = hashlib.sha256(intruder).hexdigest()
    intruder_version = "20000101T000000000000Z-" + intruder_sha[:16]
    raced: list[str] = []

    def other_replica_writes(**kwargs: Any) -> None:
        if raced:
            return
        raced.append(kwargs["event_name"])
        # What a replica does: keep the current object as a version, then replace it.
        raw_s3.copy_object(
            Bucket=bucket_name,
            Key=version_key(ref, first.object.version_id),
            CopySource={"Bucket": bucket_name, "Key": first.object.key},
        )
        raw_s3.put_object(
            Bucket=bucket_name,
            Key=first.object.key,
            Body=intruder,
            Metadata=object_metadata(ref, intruder_sha, intruder_version, "2000-01-01T00:00:00Z"),
        )

    app.s3.meta.events.register("before-send.s3.CopyObject", other_replica_writes)
    mine = modified_part10(original)

    response = await client.put(ref, mine)

    assert raced  # the race did happen
    assert not response.already_existed
    assert await client.get(address_of(ref)) == mine
    assert await client.get(address_of(ref), version_id=first.object.version_id) == original
    assert await client.get(address_of(ref), version_id=intruder_version) == intruder
