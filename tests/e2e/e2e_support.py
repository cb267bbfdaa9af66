"""Helpers of the end-to-end tests: the running stack's addresses and DCMTK invocation."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pacs_cli.stack import REPO, Stack, StackConfig, free_port, group_at_end_of_topic


@dataclass
class RunningStack:
    """Where the end-to-end stack listens."""

    stack: Stack
    dicom_port: int
    storage_port: int
    indexer_port: int
    gateway_port: int
    bucket: str
    run_dir: Path
    tenant: str = "default"
    ae_title: str = "CLOUDPACS"


def infra_script(name: str, action: str) -> None:
    """Run ``infra/<name>.sh <action>`` (used to stop and restart S3 or Kafka)."""
    subprocess.run([str(REPO / "infra" / f"{name}.sh"), action], check=True, timeout=180)


def dcmtk_env() -> dict[str, str]:
    """DCMTK disables Nagle only when asked; without it small PDUs crawl."""
    return {**os.environ, "TCP_NODELAY": "1"}


def dcmtk_tool(name: str) -> str:
    """The DCMTK program ``name`` from the system, never pynetdicom's same-named app scripts
    that the virtual environment puts first on PATH."""
    path = shutil.which(name, path="/usr/bin:/usr/local/bin")
    if path is None:
        raise FileNotFoundError(f"DCMTK's {name} not found: run infra/bootstrap.sh (apt dcmtk)")
    return path


def run_dcmtk(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool, capturing its output."""
    return subprocess.run(
        [dcmtk_tool(args[0]), *args[1:]],
        env=dcmtk_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextmanager
def running_stack(
    infra_env: dict[str, str], run_dir: Path, env: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    """Storage, indexer and gateway as processes on free ports, a bucket and an indexer
    group of their own; stopped on exit."""
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
            **(env or {}),
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
