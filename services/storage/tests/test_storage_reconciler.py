"""Self-repair: a write or delete that was made but never announced is found through its
intent record and announced by the reconciler, without anyone acting
(``pacs_storage.intents``). Real S3 server and Kafka; the failures are made deterministic by
stopping the writer at the exact step (a granted PUT never committed) or by making the
announcement fail once."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
import urllib3
from pacs.storage.v1 import storage_service_pb2 as pb
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import UnavailableError
from pacs_common.metrics import STORAGE_OLDEST_UNANNOUNCED, STORAGE_UNANNOUNCED
from pacs_common.settings import S3Settings
from pacs_storage.app import StorageApp
from pacs_storage.settings import StorageSettings
from storage_testkit import (
    InstanceEvents,
    address_of,
    for_tenant,
    grant_request,
    intent_records,
    marker_part10,
    modified_part10,
    sample_part10,
    stored_keys,
    synthetic_part10,
)

MIB = 1024 * 1024


@pytest.fixture
def storage_settings(s3_settings: S3Settings, raw_s3: Any) -> StorageSettings:
    """Reconciler passes every half second over intents older than one second, grants last two
    (the test's stand-ins for a minute and five minutes)."""
    return StorageSettings(
        grpc_port=0,
        s3=s3_settings,
        kafka_retry_s=0.2,
        shutdown_grace_s=1,
        reconcile_after_s=1.0,
        reconcile_interval_s=0.5,
        grant_ttl_s=2,  # a write not made is abandoned once its grant expired: after 3 s
    )


def _send(signed: pb.SignedRequest, body: bytes) -> int:
    response = urllib3.request(
        signed.method, signed.url, body=body, headers=dict(signed.headers), retries=False
    )
    return int(response.status)


async def _granted_put_without_commit(
    client: StorageClient, ref: Any, data: bytes, part_size: int = 0
) -> pb.GrantWriteResponse:
    """What a writer that dies between its PUT and its CommitWrite leaves behind."""
    grant = await client.grant_write(grant_request(ref, data, part_size))
    for signed in grant.requests:
        end = signed.offset + signed.length if signed.length else len(data)
        assert _send(signed, data[signed.offset : end]) == 200
    return grant


async def _marker_events(
    app: StorageApp,
    client: StorageClient,
    events: InstanceEvents,
    data: bytes,
    tenant: str,
    wait_s: float = 2.2,
) -> list[Any]:
    """The events after those already taken, up to a marker stored after one more reconciler
    pass; then the marker's own intent is removed (what is left in ``_intents/`` is the
    test's). ``wait_s``: past the delay (1 s) and S3's one-second LastModified."""
    await asyncio.sleep(wait_s)
    await app.reconciler.reconcile_once()
    marker = marker_part10(data)
    marker_ref = instance_ref_of(marker, tenant)
    await client.put(marker_ref, marker)
    found = await events.until_marker(for_tenant(tenant), marker_ref.sop_instance_uid)
    await app.intents.drain()
    return found


async def test_a_granted_write_never_committed_is_announced_once_by_the_reconciler(
    app: StorageApp,
    client: StorageClient,
    events: InstanceEvents,
    raw_s3: Any,
    storage_settings: StorageSettings,
    tenant: str,
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    await _granted_put_without_commit(client, ref, data)
    event = await events.next(for_tenant(tenant), within=30)
    again = await _marker_events(app, client, events, data, tenant)

    assert event.message.object.sha256 == hashlib.sha256(data).hexdigest()
    assert event.message.object.instance.sop_instance_uid == ref.sop_instance_uid
    assert event.message.header_part10, "the repaired event carries the header too"
    assert again == []
    assert intent_records(raw_s3, storage_settings.s3.bucket) == []


async def test_a_put_whose_announcement_failed_is_announced_by_the_reconciler(
    app: StorageApp,
    client: StorageClient,
    events: InstanceEvents,
    monkeypatch: pytest.MonkeyPatch,
    tenant: str,
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    failures = []

    async def fail(*args: Any, **kwargs: Any) -> None:
        failures.append(args)
        raise UnavailableError("Kafka stopped acknowledging (injected)")

    real = app.announcer.instance_stored
    monkeypatch.setattr(app.announcer, "instance_stored", fail)
    with pytest.raises(UnavailableError):
        await client.put(ref, data)  # the sender gives up after this (client retries included)
    monkeypatch.setattr(app.announcer, "instance_stored", real)
    event = await events.next(for_tenant(tenant), within=30)

    assert failures, "the injected failure happened"
    assert event.message.object.sha256 == hashlib.sha256(data).hexdigest()


async def test_a_delete_whose_announcement_failed_is_announced_by_the_reconciler(
    app: StorageApp,
    client: StorageClient,
    events: InstanceEvents,
    monkeypatch: pytest.MonkeyPatch,
    tenant: str,
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    await client.put(ref, data)
    await events.next(for_tenant(tenant))

    async def fail(*args: Any, **kwargs: Any) -> None:
        raise UnavailableError("Kafka stopped acknowledging (injected)")

    real = app.announcer.instance_deleted
    monkeypatch.setattr(app.announcer, "instance_deleted", fail)
    with pytest.raises(UnavailableError):
        await client.delete(ref)
    monkeypatch.setattr(app.announcer, "instance_deleted", real)
    deleted = await events.next(for_tenant(tenant, "pacs.events.v1.InstanceDeleted"), within=30)

    assert deleted.message.instance.sop_instance_uid == ref.sop_instance_uid


async def test_a_grant_never_used_announces_nothing_and_its_upload_is_aborted(
    app: StorageApp,
    client: StorageClient,
    events: InstanceEvents,
    raw_s3: Any,
    storage_settings: StorageSettings,
    tenant: str,
) -> None:
    data = synthetic_part10(11 * MIB)
    ref = instance_ref_of(data, tenant)
    await client.grant_write(grant_request(ref, data, 5 * MIB))
    bucket = storage_settings.s3.bucket

    # Abandoned only once the grant expired (2 s) and the delay passed (1 s).
    announced = await _marker_events(app, client, events, data, tenant, wait_s=4.5)

    assert announced == []
    assert intent_records(raw_s3, bucket) == []
    assert raw_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_committed_writes_leave_no_intent_and_no_second_announcement(
    app: StorageApp,
    client: StorageClient,
    events: InstanceEvents,
    raw_s3: Any,
    storage_settings: StorageSettings,
    tenant: str,
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    await client.put(ref, data)
    announced = await _marker_events(app, client, events, data, tenant)

    assert len(announced) == 1
    assert intent_records(raw_s3, storage_settings.s3.bucket) == []


async def test_a_forged_intent_key_in_a_grant_token_cannot_remove_an_object(
    client: StorageClient, raw_s3: Any, storage_settings: StorageSettings, tenant: str
) -> None:
    victim = sample_part10()
    victim_ref = instance_ref_of(victim, tenant)
    stored = await client.put(victim_ref, victim)
    data = synthetic_part10(1024)
    ref = instance_ref_of(data, tenant)
    grant = await _granted_put_without_commit(client, ref, data)
    token = pb.WriteGrantToken.FromString(grant.grant_token)
    token.intent_key = stored.object.key

    await client.commit_write(
        pb.CommitWriteRequest(
            instance=ref,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            grant_token=token.SerializeToString(),
        )
    )

    assert (await client.head(victim_ref)).sha256 == stored.object.sha256


async def test_what_stays_unannounced_is_visible_as_a_metric(
    app: StorageApp, client: StorageClient, monkeypatch: pytest.MonkeyPatch, tenant: str
) -> None:
    async def kafka_down(*args: Any, **kwargs: Any) -> None:
        raise UnavailableError("Kafka is down (injected)")

    monkeypatch.setattr(app.announcer, "instance_stored", kafka_down)
    data = sample_part10()
    with pytest.raises(UnavailableError):
        await client.put(instance_ref_of(data, tenant), data)

    settled = await app.reconciler.reconcile_once()
    assert settled == 0
    # The pass right after the write sees it as too young; wait past the delay (1 s) and S3's
    # one-second LastModified (a record is counted from the end of its second).
    await asyncio.sleep(2.2)
    await app.reconciler.reconcile_once()

    assert STORAGE_UNANNOUNCED._value.get() >= 1  # type: ignore[attr-defined]
    assert STORAGE_OLDEST_UNANNOUNCED._value.get() >= 1.0  # type: ignore[attr-defined]


async def test_a_grant_still_valid_is_left_alone_however_old_its_intent(
    app: StorageApp,
    client: StorageClient,
    raw_s3: Any,
    storage_settings: StorageSettings,
    tenant: str,
) -> None:
    # A large upload can outlast the delay: while its grant is valid, bytes may still arrive.
    data = synthetic_part10(11 * MIB)
    await client.grant_write(grant_request(instance_ref_of(data, tenant), data, 5 * MIB))
    bucket = storage_settings.s3.bucket

    # Past the delay (1 s) and S3's one-second LastModified, before grant + delay (3 s).
    await asyncio.sleep(2.2)
    await app.reconciler.reconcile_once()

    assert len(intent_records(raw_s3, bucket)) == 1
    assert len(raw_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1


async def test_a_delete_of_every_version_interrupted_is_finished_by_the_reconciler(
    app: StorageApp,
    client: StorageClient,
    events: InstanceEvents,
    monkeypatch: pytest.MonkeyPatch,
    raw_s3: Any,
    storage_settings: StorageSettings,
    tenant: str,
) -> None:
    """Storage stops between the current object and the earlier versions of a delete of every
    version: the reconciler removes the versions left before it announces the deletion."""
    original = sample_part10()
    ref = instance_ref_of(original, tenant)
    await client.put(ref, original)
    await client.put(ref, modified_part10(original))
    address = address_of(ref)

    async def stop(prefix: str) -> int:
        raise UnavailableError("storage stopped here (injected)")

    monkeypatch.setattr(app.bucket, "delete_prefix", stop)
    with pytest.raises(UnavailableError):
        await client.delete(address, all_versions=True)
    monkeypatch.undo()
    versions_left = [
        k for k in stored_keys(raw_s3, storage_settings.s3.bucket) if ".versions/" in k
    ]
    deleted = await events.next(for_tenant(tenant, "pacs.events.v1.InstanceDeleted"), within=30)

    assert versions_left, "the injected stop left an earlier version behind"
    assert deleted.message.all_versions
    assert [
        k for k in stored_keys(raw_s3, storage_settings.s3.bucket) if ref.sop_instance_uid in k
    ] == []
