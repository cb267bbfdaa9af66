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
from typing import Any

from pacs_cli.stack import Stack, StackConfig
from pacs_common.audit_events import TOPIC_AUDIT
from pacs_common.events import TOPIC_INSTANCES
from pacs_common.local import REPO, free_port
from pacs_common.s3 import make_s3_client
from pacs_common.settings import KafkaSettings, S3Settings
from pacs_testkit.kafka import group_at_end_of_topic
from pydantic import SecretStr
from pydicom import dcmread
from pydicom.dataset import Dataset


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
    dicomweb_port: int = 0
    transcoder_port: int | None = None
    deid_port: int | None = None


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


def findscu(stack: RunningStack, out_dir: Path, *keys: str) -> list[Dataset]:
    """DCMTK findscu (Study Root) with ``keys`` against the stack; the responses, read from
    the files it writes into ``out_dir``. Fails the test if findscu fails."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key_args = [arg for key in keys for arg in ("-k", key)]
    endpoint = ["127.0.0.1", str(stack.dicom_port)]
    result = run_dcmtk(
        ["findscu", "-S", "-aec", stack.ae_title, "-X", *key_args, *endpoint], cwd=out_dir
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))]


def s3_client(infra_env: dict[str, str]) -> Any:
    """A client of the infrastructure's S3 server, set up as the services set up theirs."""
    return make_s3_client(
        S3Settings(
            endpoint=infra_env["PACS_S3_ENDPOINT"],
            access_key=SecretStr(infra_env["PACS_S3_ACCESS_KEY"]),
            secret_key=SecretStr(infra_env["PACS_S3_SECRET_KEY"]),
            region=infra_env.get("PACS_S3_REGION", "us-east-1"),
        )
    )


@contextmanager
def running_stack(
    infra_env: dict[str, str],
    run_dir: Path,
    env: dict[str, str] | None = None,
    *,
    transcoder: bool = False,
    deid: bool = False,
) -> Iterator[RunningStack]:
    """Storage, indexer, gateway, audit, hl7 and dicomweb as processes on free ports (and the
    transcoder and de-identification services when asked), a bucket and an indexer group of
    their own; stopped on exit."""
    bucket = f"e2e-{uuid.uuid4().hex[:16]}"
    config = StackConfig(
        run_dir=run_dir,
        storage_port=free_port(),
        indexer_port=free_port(),
        gateway_port=free_port(),
        hl7_port=free_port(),
        mllp_port=free_port(),
        dicom_port=free_port(),
        audit_port=free_port(),
        dicomweb_port=free_port(),
        dicomweb_grpc_port=free_port(),
        transcoder_port=free_port() if transcoder else None,
        deid_port=free_port() if deid else None,
        env={
            "PACS_S3_BUCKET": bucket,
            "PACS_INDEXER_CONSUMER_GROUP": f"e2e-indexer-{uuid.uuid4().hex[:8]}",
            "PACS_TRANSCODER_CONSUMER_GROUP": f"e2e-transcoder-{uuid.uuid4().hex[:8]}",
            # Each stack's audit trail its own group too: a shared one would make this stack's
            # audit service first read every audit event other tests emitted since the last
            # stack stopped (and wait on the group's rebalances), before this stack's events.
            "PACS_AUDIT_CONSUMER_GROUP": f"e2e-audit-{uuid.uuid4().hex[:8]}",
            **(env or {}),
        },
    )
    # A fresh group would replay the whole shared topic (every earlier test's events) first.
    for group, topic in (
        ("PACS_INDEXER_CONSUMER_GROUP", TOPIC_INSTANCES),
        ("PACS_TRANSCODER_CONSUMER_GROUP", TOPIC_INSTANCES),
        ("PACS_AUDIT_CONSUMER_GROUP", TOPIC_AUDIT),
    ):
        asyncio.run(group_at_end_of_topic(config.env[group], KafkaSettings(), topic))
    stack = Stack(config)
    stack.start(timeout_s=90)
    try:
        yield RunningStack(
            stack=stack,
            dicom_port=config.dicom_port,
            storage_port=config.storage_port,
            indexer_port=config.indexer_port,
            gateway_port=config.gateway_port,
            dicomweb_port=config.dicomweb_port,
            bucket=bucket,
            run_dir=run_dir,
            transcoder_port=config.transcoder_port,
            deid_port=config.deid_port,
        )
    finally:
        stack.stop()
