"""Helpers of the end-to-end tests: the running stack's addresses and DCMTK invocation."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pacs_cli.stack import REPO, Stack


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
