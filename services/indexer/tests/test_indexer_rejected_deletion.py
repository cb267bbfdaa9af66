"""Deletion of rejected instances by policy, against a real storage service (S3 and Kafka):
kept until their period has passed, then removed through storage's Delete (every version),
once; removed again if they are sent again; per-tenant overrides; 113039 at once by default."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest
from indexer_helpers import Catalog, kos
from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs.type.v1 import instance_pb2
from pacs_common import audit_events
from pacs_common.clients.storage import StorageClient
from pacs_common.errors import NotFoundError
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.settings import KafkaSettings
from pacs_indexer import rejected_deletion
from pacs_indexer.database import Database
from pacs_indexer.lifecycle import PATIENT, Hold, release_hold, set_hold
from pacs_indexer.reconcile import check
from pacs_indexer.records import now_rfc3339
from pacs_indexer.rejected_deletion import RejectedDeleter, RejectionPolicy
from pacs_indexer.schema import RejectedInstance
from pacs_storage.app import StorageApp
from pacs_testkit.audit import audit_topic, emitter_settings, start_audit
from pacs_testkit.storage import start_storage
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from sqlalchemy import select

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
STUDY_DELETED = audit_pb.AUDIT_EVENT_TYPE_STUDY_DELETED


@pytest.fixture
def database(fresh_database: Database) -> Database:
    """An index of this test alone (the sweep looks at every tenant), on each backend."""
    fresh_database.create_schema()
    return fresh_database


@pytest.fixture
async def storage(bucket_name: str, infra_env: dict[str, str]) -> AsyncIterator[StorageClient]:
    app: StorageApp = await start_storage(bucket_name, kafka_retry_s=0.2)
    channel = open_channel(f"127.0.0.1:{app.grpc_port}", client_tls())
    yield StorageClient(channel, timeout=30)
    await channel.close()
    await app.stop()


def _ref(tenant: str, ds: Dataset) -> instance_pb2.InstanceRef:
    return instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        sop_instance_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID,
    )


async def _store(
    storage: StorageClient, catalog: Catalog, tenant: str, count: int
) -> list[Dataset]:
    """``count`` CT instances of one series, stored in storage and indexed."""
    study, series = generate_uid(), generate_uid()
    datasets = []
    for _ in range(count):
        ds = dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        await _put(storage, catalog, tenant, ds)
        datasets.append(ds)
    return datasets


async def _put(storage: StorageClient, catalog: Catalog, tenant: str, ds: Dataset) -> None:
    buffer = BytesIO()
    ds.save_as(buffer)
    await storage.put(_ref(tenant, ds), buffer.getvalue())
    catalog.add(tenant, ds, stored_time=now_rfc3339())


async def _stored(storage: StorageClient, tenant: str, ds: Dataset) -> bool:
    try:
        await storage.head(_ref(tenant, ds))
    except NotFoundError:
        return False
    return True


def _tenant() -> str:
    return f"iocm-{uuid.uuid4().hex[:8]}"


async def test_rejected_instances_are_deleted_once_their_period_has_passed(
    database: Database, storage: StorageClient
) -> None:
    catalog = Catalog(database)
    tenant = _tenant()
    instances = await _store(storage, catalog, tenant, 3)
    catalog.add(tenant, kos(instances[:2]))
    deleter = RejectedDeleter(database, storage, RejectionPolicy(delete_after=30 * DAY), 1.0)
    now = datetime.now(UTC)

    assert await deleter.sweep(now) == 0
    assert [await _stored(storage, tenant, ds) for ds in instances] == [True, True, True]
    # CheckIndex: the rejected instances in storage are hidden on purpose, not missing.
    checked = await check(database, storage, tenant)
    # (The index holds one image and the note, which this test indexes without storing it.)
    assert (checked.stored_count, checked.indexed_count, checked.not_indexed) == (3, 2, [])

    assert await deleter.sweep(now + 31 * DAY) == 2
    assert [await _stored(storage, tenant, ds) for ds in instances] == [False, False, True]
    assert await deleter.sweep(now + 31 * DAY) == 0  # done: nothing is deleted twice

    # Sent again after its deletion: withheld from the index, and deleted again.
    await _put(storage, catalog, tenant, instances[0])
    assert await _stored(storage, tenant, instances[0])
    assert await deleter.sweep(now + 32 * DAY) == 1
    assert not await _stored(storage, tenant, instances[0])
    with database.session() as session:
        rows = session.execute(
            select(RejectedInstance).where(RejectedInstance.tenant == tenant)
        ).scalars()
        assert all(row.deleted_time >= row.stored_time for row in rows)


async def test_kept_forever_by_default_except_retention_expired(
    database: Database, storage: StorageClient
) -> None:
    catalog = Catalog(database)
    tenant = _tenant()
    instances = await _store(storage, catalog, tenant, 3)
    catalog.add(tenant, kos(instances[:1], codes.DCM.IncorrectModalityWorklistEntry))
    catalog.add(tenant, kos(instances[1:2], codes.DCM.DataRetentionPolicyExpired))
    deleter = RejectedDeleter(database, storage, RejectionPolicy(), 1.0)
    later = datetime.now(UTC) + 3650 * DAY
    await deleter.sweep(later)
    assert [await _stored(storage, tenant, ds) for ds in instances] == [True, False, True]
    # A later 113039 note supersedes the earlier reason of an instance: it is deleted too.
    catalog.add(tenant, kos(instances[:1], codes.DCM.DataRetentionPolicyExpired))
    await deleter.sweep(later)
    assert [await _stored(storage, tenant, ds) for ds in instances] == [False, False, True]


async def test_instances_kept_forever_never_hold_up_due_ones(
    database: Database, storage: StorageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep reads a page of due rows: rows kept forever must not fill it."""
    monkeypatch.setattr(rejected_deletion, "_PAGE", 2)
    catalog = Catalog(database)
    tenant = _tenant()
    instances = await _store(storage, catalog, tenant, 4)
    catalog.add(tenant, kos(instances[:3], codes.DCM.RejectedForQualityReasons))
    catalog.add(tenant, kos(instances[3:], codes.DCM.DataRetentionPolicyExpired))
    deleter = RejectedDeleter(database, storage, RejectionPolicy(), 1.0)
    assert await deleter.sweep(datetime.now(UTC) + DAY) == 1
    assert [await _stored(storage, tenant, ds) for ds in instances] == [True, True, True, False]


async def test_a_legal_hold_stops_the_policy_until_released(
    database: Database, storage: StorageClient
) -> None:
    catalog = Catalog(database)
    tenant = _tenant()
    instances = await _store(storage, catalog, tenant, 2)
    catalog.add(tenant, kos(instances, codes.DCM.DataRetentionPolicyExpired))
    deleter = RejectedDeleter(database, storage, RejectionPolicy(), 1.0)
    hold = Hold(PATIENT, str(instances[0].PatientID), reason="litigation")
    set_hold(database, tenant, hold)

    assert await deleter.sweep(datetime.now(UTC) + DAY) == 0
    assert [await _stored(storage, tenant, ds) for ds in instances] == [True, True]

    release_hold(database, tenant, hold)
    assert await deleter.sweep(datetime.now(UTC) + DAY) == 2
    assert [await _stored(storage, tenant, ds) for ds in instances] == [False, False]


async def test_a_tenant_can_delete_at_once(database: Database, storage: StorageClient) -> None:
    catalog = Catalog(database)
    eager, keeper = _tenant(), _tenant()
    policy = RejectionPolicy(delete_after=None, by_tenant={eager: timedelta(0)})
    deleter = RejectedDeleter(database, storage, policy, 1.0)
    stored = {t: await _store(storage, catalog, t, 2) for t in (eager, keeper)}
    for tenant, instances in stored.items():
        catalog.add(tenant, kos(instances[:1], codes.DCM.RejectedForPatientSafetyReasons))
    await deleter.sweep(datetime.now(UTC) + timedelta(seconds=1))
    assert not await _stored(storage, eager, stored[eager][0])
    assert await _stored(storage, keeper, stored[keeper][0])
    assert await _stored(storage, eager, stored[eager][1])


def test_policy_periods() -> None:
    policy = RejectionPolicy(
        delete_after=30 * DAY, by_tenant={"research": None, "scratch": timedelta(0)}
    )
    assert policy.keep_for("any", "113001") == 30 * DAY
    assert policy.keep_for("research", "113037") is None
    assert policy.keep_for("scratch", "113038") == timedelta(0)
    assert policy.keep_for("research", "113039") == timedelta(0)  # 113039: its own setting
    assert RejectionPolicy(retention_expired_delete_after=None).deletes_anything is False
    assert RejectionPolicy().deletes_anything is True


async def test_each_deletion_is_audited(tmp_path: Path, storage: StorageClient) -> None:
    """DICOM Study Deleted (110105, PS3.15 A.5.3) by the indexer reaches a real audit trail."""
    topic = audit_topic()
    trail = await start_audit(tmp_path, topic)
    emitter = await audit_events.start_emitter(KafkaSettings(), "indexer", emitter_settings(topic))
    database = Database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    database.create_schema()
    try:
        catalog = Catalog(database)
        tenant = _tenant()
        instances = await _store(storage, catalog, tenant, 2)
        catalog.add(tenant, kos(instances[:1], codes.DCM.DataRetentionPolicyExpired))
        deleter = RejectedDeleter(database, storage, RejectionPolicy(), 1.0)
        assert await deleter.sweep() == 1
        deadline = time.monotonic() + 60
        while True:
            found = [r.event for r in trail.trail.query(tenants=[tenant], event_type=STUDY_DELETED)]
            if found or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        (event,) = found
        assert event.action == "D"
        assert list(event.study_instance_uids) == [instances[0].StudyInstanceUID]
        assert event.actors[0].user_id == "indexer"
    finally:
        if emitter is not None:
            await emitter.stop()
        audit_events.install(None)
        database.dispose()
        await trail.stop()
