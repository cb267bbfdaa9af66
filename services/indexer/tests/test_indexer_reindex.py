"""``Reindex`` rebuilds an empty index from storage in groups, and one object that cannot be
indexed fails alone: the rest of its group is indexed and the failure is counted."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pacs.query.v1 import query_service_pb2 as pb
from pacs.query.v1 import query_service_pb2_grpc as pb_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.auth import Role
from pacs_common.s3 import make_s3_client
from pacs_common.settings import S3Settings
from pacs_indexer.database import Database
from pacs_storage.app import StorageApp
from pacs_storage.keys import object_key
from pacs_storage.versions import object_metadata
from pacs_testkit.channels import plain_aio_channel
from pacs_testkit.hydra import Hydra
from pacs_testkit.storage import start_storage
from upgrade_support import previous_release, restore_previous_objects, start_deployed_indexer

pytestmark = pytest.mark.integration


@pytest.fixture
async def storage(bucket_name: str, infra_env: dict[str, str]) -> AsyncIterator[StorageApp]:
    """Four instances (see fixtures/upgrade) and one object that is no DICOM at all."""
    dump = previous_release()
    restore_previous_objects(bucket_name, dump)
    tenant = dump["objects"][0]["key"].split("/")[0]
    garbage = b"not a DICOM file" * 10
    ref = instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid="1.2.3.4",
        series_instance_uid="1.2.3.4.5",
        sop_instance_uid="1.2.3.4.5.6",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    digest = hashlib.sha256(garbage)
    make_s3_client(S3Settings(bucket=bucket_name)).put_object(
        Bucket=bucket_name,
        Key=object_key(ref),
        Body=garbage,
        ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
        Metadata=object_metadata(
            ref, digest.hexdigest(), "20261130T120000000000Z-x", "2026-11-30T12:00:00.000Z"
        ),
    )
    app = await start_storage(bucket_name)
    yield app
    await app.stop()


async def test_reindex_indexes_every_good_object_and_counts_the_bad_one(
    storage: StorageApp, tmp_path: Path, hydra: Hydra
) -> None:
    dump = previous_release()
    tenant = dump["objects"][0]["key"].split("/")[0]
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    Database(url).migrate()
    indexer = await start_deployed_indexer(storage.grpc_port, url)
    channel = plain_aio_channel(f"127.0.0.1:{indexer.grpc_port}")
    try:
        stub = pb_grpc.QueryServiceStub(channel)
        metadata = hydra.metadata(tenant, [Role.ADMIN])
        progress = [
            p async for p in stub.Reindex(pb.ReindexRequest(tenant=tenant), metadata=metadata)
        ]
        good = len(dump["objects"])
        assert (progress[-1].total, progress[-1].processed, progress[-1].failed) == (
            good + 1,
            good,
            1,
        )
        check = await stub.CheckIndex(pb.CheckIndexRequest(tenant=tenant), metadata=metadata)
        assert (check.indexed_count, check.not_indexed_count) == (good, 1)
        assert check.not_indexed[0].sop_instance_uid == "1.2.3.4.5.6"
    finally:
        await channel.close()
        await indexer.stop()
