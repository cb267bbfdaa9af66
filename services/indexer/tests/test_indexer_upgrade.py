"""Upgrading a stack that holds data of the previous release (docs/operations.md, "Upgrades").

The index starts at an earlier schema revision (0001, and 0002: the revision before head once
0003 is merged), holding the rows that the indexer of the last main commit at that revision
wrote (``fixtures/upgrade/index_<revision>.json``, made by running that commit's own code: see
``make_fixtures.py``; a new revision adds a fixture there), and the bucket holds the objects
those rows point to, with the metadata storage wrote. Then the migration runs as the Helm
hook runs it (``pacs-indexer migrate`` in a process of its own, with only the Job's
environment), today's indexer starts without migrating, answers queries for that data, finds
nothing to reindex (``CheckIndex``, what ``pacs index check`` calls), and indexes new
instances beside the old ones. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from indexer_helpers import values
from pacs.query.v1 import query_service_pb2 as pb
from pacs.query.v1 import query_service_pb2_grpc as pb_grpc
from pacs_common.auth import Role
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import FailedPreconditionError
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_indexer.database import Database, head_revision
from pacs_storage.app import StorageApp
from pacs_testkit.channels import plain_aio_channel
from pacs_testkit.hydra import Hydra
from pacs_testkit.postgres import DEFAULT_URL, scratch_database
from pacs_testkit.storage import start_storage
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from upgrade_support import (
    PREVIOUS_REVISIONS,
    previous_release,
    restore_previous_objects,
    start_deployed_indexer,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, infra_env: dict[str, str]
) -> Iterator[str]:
    """An empty index database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite'}"
        return
    with scratch_database(
        infra_env.get("PACS_TEST_POSTGRES_URL", DEFAULT_URL), "test_upgrade"
    ) as url:
        yield url


def restore_previous_index(url: str, dump: dict[str, Any]) -> None:
    """The database at the previous revision, holding the previous release's rows."""
    database = Database(url)
    try:
        database.migrate(dump["revision"])
        metadata = sa.MetaData()
        metadata.reflect(database.engine)
        with database.engine.begin() as connection:
            for table in metadata.sorted_tables:
                rows = dump["tables"].get(table.name)
                if rows:
                    connection.execute(table.insert(), rows)
            if connection.dialect.name == "postgresql":
                # Rows came with their ids: move each id sequence past them, as pg_restore does.
                for name in dump["tables"]:
                    connection.execute(
                        sa.text(
                            f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                            f"(SELECT max(id) FROM {name}))"
                        )
                    )
    finally:
        database.dispose()


def run_migration_hook(url: str) -> subprocess.CompletedProcess[str]:
    """``pacs-indexer migrate`` as the chart's hook Job runs it: a process of its own with the
    indexer's environment."""
    return subprocess.run(
        [sys.executable, "-m", "pacs_indexer", "migrate"],
        # Only what the chart's Job gets (tests/chart/test_migrations.py): no Kafka, no storage.
        env={"PATH": os.environ["PATH"], "PACS_INDEXER_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
async def storage(bucket_name: str, infra_env: dict[str, str]) -> AsyncIterator[StorageApp]:
    """Storage over a bucket already holding the previous release's objects."""
    restore_previous_objects(bucket_name, previous_release())
    app = await start_storage(bucket_name)
    yield app
    await app.stop()


@pytest.mark.parametrize("revision", PREVIOUS_REVISIONS)
async def test_upgrade_from_the_previous_schema_needs_no_reindex(
    revision: str, database_url: str, storage: StorageApp, hydra: Hydra
) -> None:
    dump = previous_release(revision)
    tenant = dump["objects"][0]["key"].split("/")[0]
    restore_previous_index(database_url, dump)

    # Today's indexer refuses an old schema rather than serve it or migrate behind the hook.
    old = Database(database_url)
    if revision != head_revision():
        with pytest.raises(FailedPreconditionError, match=revision):
            old.check_schema()
    old.dispose()

    migrated = run_migration_hook(database_url)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    again = run_migration_hook(database_url)  # the hook runs on every upgrade: harmless
    assert again.returncode == 0, again.stdout + again.stderr
    database = Database(database_url)
    assert database.check_schema() == head_revision()
    database.dispose()

    indexer = await start_deployed_indexer(storage.grpc_port, database_url)
    channel = plain_aio_channel(f"127.0.0.1:{indexer.grpc_port}")
    metadata = hydra.metadata(tenant, [Role.QUERY, Role.ADMIN])
    storage_channel = open_channel(f"127.0.0.1:{storage.grpc_port}", client_tls())
    try:
        query = pb_grpc.QueryServiceStub(channel)
        # What C-FIND and QIDO-RS ask the indexer: every study of the old release, by patient.
        for obj in dump["objects"]:
            dataset = dcmread(get_testdata_file(obj["file"]), stop_before_pixels=True)
            found = await query.FindStudies(
                pb.FindStudiesRequest(
                    query=pb.Query(
                        tenant=tenant,
                        match={"StudyInstanceUID": dataset.StudyInstanceUID},
                        return_keys=["PatientID", "PatientName", "ModalitiesInStudy"],
                    )
                ),
                metadata=metadata,
            )
            assert found.total_count == 1, obj["file"]
            study = json.loads(found.datasets[0])
            assert values(study, "00100020") == [dataset.PatientID]
            assert values(study, "00080061") == [dataset.Modality]
            header = await query.GetInstanceMetadata(
                pb.GetInstanceMetadataRequest(
                    tenant=tenant, sop_instance_uid=dataset.SOPInstanceUID
                ),
                metadata=metadata,
            )
            assert json.loads(header.dataset)["00080018"]["Value"] == [dataset.SOPInstanceUID]

        check = await query.CheckIndex(pb.CheckIndexRequest(tenant=tenant), metadata=metadata)
        assert (check.stored_count, check.indexed_count) == (len(dump["objects"]),) * 2
        assert (check.not_indexed_count, check.not_in_storage_count) == (0, 0)

        # A new instance stored after the upgrade lands beside the old rows (new ids too).
        path = get_testdata_file("CT_small.dcm")
        assert path is not None
        fresh = dcmread(path)
        fresh.StudyInstanceUID, fresh.SeriesInstanceUID = generate_uid(), generate_uid()
        fresh.SOPInstanceUID = fresh.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        fresh.PatientID = "AFTER-UPGRADE"
        buffer = _encoded(fresh)
        await StorageClient(storage_channel, timeout=30).put(
            instance_ref_of(buffer, tenant), buffer
        )

        async def indexed() -> bool:
            response = await query.FindStudies(
                pb.FindStudiesRequest(
                    query=pb.Query(tenant=tenant, match={"PatientID": "AFTER-UPGRADE"})
                ),
                metadata=metadata,
            )
            return response.total_count == 1

        await _eventually(indexed)
        check = await query.CheckIndex(pb.CheckIndexRequest(tenant=tenant), metadata=metadata)
        assert check.indexed_count == len(dump["objects"]) + 1
        assert (check.not_indexed_count, check.not_in_storage_count) == (0, 0)
    finally:
        await storage_channel.close()
        await channel.close()
        await indexer.stop()


def _encoded(dataset: Any) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


async def _eventually(check: Any, within: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"condition not reached within {within} s")
        await asyncio.sleep(0.2)


def test_a_newer_schema_is_accepted_for_a_rollback_and_never_migrated_down(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    database = Database(url)
    database.migrate()
    with database.engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    # A pod of the previous release after `helm rollback`: it serves (the schema only grew).
    assert database.check_schema() == "9999"
    database.dispose()
    # The previous release's hook on that database refuses, and changes nothing.
    refused = run_migration_hook(url)
    assert refused.returncode == 1
    assert "9999" in refused.stdout + refused.stderr
    assert Database(url).revision() == "9999"
