"""An end-to-end stack: the real services as processes on free ports, over the real
infrastructure started by ``infra/up.sh``, driven with DCMTK and gRPC clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from pacs_cli.stack import Stack, StackConfig, free_port

from tests.e2e.e2e_support import RunningStack
from tests.fixtures.kafka_positions import group_at_end_of_topic


@pytest.fixture(scope="module")
def e2e_stack(
    infra_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    """Start storage, indexer and gateway as processes; stop them afterwards."""
    run_dir = tmp_path_factory.mktemp("stack")
    bucket = f"e2e-{uuid.uuid4().hex[:16]}"
    config = StackConfig(
        run_dir=run_dir,
        storage_port=free_port(),
        indexer_port=free_port(),
        gateway_port=free_port(),
        dicom_port=free_port(),
        env={
            "PACS_S3_BUCKET": bucket,
            "PACS_INDEXER_CONSUMER_GROUP": f"e2e-indexer-{uuid.uuid4().hex[:8]}",
        },
    )
    # A fresh group would replay the whole shared topic (every earlier test's events) first.
    asyncio.run(
        group_at_end_of_topic(
            config.env["PACS_INDEXER_CONSUMER_GROUP"], infra_env["PACS_KAFKA_BOOTSTRAP"]
        )
    )
    stack = Stack(config)
    stack.start(timeout_s=90)
    try:
        yield RunningStack(
            stack=stack,
            dicom_port=config.dicom_port,
            storage_port=config.storage_port,
            indexer_port=config.indexer_port,
            gateway_port=config.gateway_port,
            bucket=bucket,
            run_dir=run_dir,
        )
    finally:
        stack.stop()
