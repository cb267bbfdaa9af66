"""Shared by the upgrade tests: the previous release's data (``fixtures/upgrade``, made by
``make_fixtures.py`` from that release's own code) and an indexer configured as deployed."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

from pacs_common.dicom import instance_ref_of
from pacs_common.events import TOPIC_WORKFLOW
from pacs_common.s3 import make_s3_client
from pacs_common.settings import KafkaSettings, S3Settings
from pacs_indexer.app import IndexerApp, create_app
from pacs_indexer.settings import IndexerSettings
from pacs_storage.versions import object_metadata
from pacs_testkit.kafka import group_at_end_of_topic
from pydicom.data import get_testdata_file

FIXTURES = Path(__file__).parent / "fixtures" / "upgrade"
PREVIOUS_REVISIONS = ["0001", "0002"]
"""Schema revisions with rows written by the last main commit at each (make_fixtures.py)."""


def previous_release(revision: str = PREVIOUS_REVISIONS[-1]) -> dict[str, Any]:
    """Rows and objects written by the release at ``revision`` (see make_fixtures.py)."""
    dump: dict[str, Any] = json.loads((FIXTURES / f"index_{revision}.json").read_text())
    assert dump["revision"] == revision
    return dump


def restore_previous_objects(bucket: str, dump: dict[str, Any]) -> None:
    """The objects the previous release's rows point to, as its storage wrote them."""
    client = make_s3_client(S3Settings(bucket=bucket))
    client.create_bucket(Bucket=bucket)
    for obj in dump["objects"]:
        path = get_testdata_file(obj["file"])
        assert path is not None
        data = Path(path).read_bytes()
        ref = instance_ref_of(data, dump["objects"][0]["key"].split("/")[0])
        client.put_object(
            Bucket=bucket,
            Key=obj["key"],
            Body=data,
            ChecksumSHA256=base64.b64encode(bytes.fromhex(obj["sha256"])).decode(),
            Metadata=object_metadata(ref, obj["sha256"], obj["version_id"], obj["stored_time"]),
            ContentType="application/dicom",
        )


async def start_deployed_indexer(storage_port: int, url: str) -> IndexerApp:
    """An indexer configured as the chart configures it: it checks the schema, never migrates;
    its consumer group starts at the end of the shared topics (only what the test stores)."""
    group = f"test-upgrade-{uuid.uuid4().hex[:12]}"
    await group_at_end_of_topic(group, KafkaSettings())
    await group_at_end_of_topic(f"{group}-workflow", KafkaSettings(), TOPIC_WORKFLOW)
    app = create_app(
        IndexerSettings(
            grpc_port=0,
            database_url=url,
            storage_target=f"127.0.0.1:{storage_port}",
            consumer_group=group,
            workflow_consumer_group=f"{group}-workflow",
            migrate_on_start=False,
        )
    )
    await app.start()
    return app
