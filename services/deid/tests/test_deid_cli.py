"""``pacs deid files`` as a user runs it: the CLI process against a running service (mutual
TLS, the CLI's own token from the local hydra), on a folder of every sample file pydicom and
pydicom-data ship plus a file that is not DICOM; run twice.

Asserts what the issue's "done when" says: no attribute the table says to remove or replace,
no private attribute, pixel data kept (Basic Profile), and the same pseudonyms (the same
bytes) on a second run.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

from cryptography.fernet import Fernet
from deid_fixtures import PROJECT_KEY
from deid_samples import pydicom_data_files, pydicom_files
from pacs_common.local import REPO
from pacs_common.settings import KafkaSettings
from pacs_deid.profile import Profile
from pacs_deid.residuals import violations
from pacs_deid.settings import DeidSettings
from pydicom import dcmread


async def run_cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pacs_cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode(errors="replace")


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


async def test_deid_files_twice(start_deid, tmp_path: Path) -> None:
    source = tmp_path / "src"
    files = pydicom_files() + pydicom_data_files()
    for index, path in enumerate(files):
        target = source / f"Doe_John_{index % 7}" / f"{index}_{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    (source / "notes.txt").write_text("not DICOM")
    settings = DeidSettings(
        grpc_port=0,
        shutdown_grace_s=1,
        projects={
            "local": {
                "source_tenants": ["default"],
                "target_tenant": "research",
                "key": PROJECT_KEY,
            }
        },
        reid_key=Fernet.generate_key().decode(),
        database_url=f"sqlite:///{tmp_path}/deid.sqlite",
        kafka=KafkaSettings(),
    )
    app = await start_deid(settings)
    address = f"127.0.0.1:{app.grpc_port}"
    first, second = tmp_path / "out1", tmp_path / "out2"
    # Three of pydicom's test files name no SOP Class/Instance UID anywhere: refused.
    expected = len(files) - 3
    code, output = await run_cli("deid", "files", str(source), str(first), "--deid", address)
    assert code == 1, output  # a refused file makes the command fail, after the summary
    assert re.search(rf"files written\s+│\s+{expected}\b", output), output
    assert re.search(r"not DICOM, skipped\s+│\s+1\b", output), output
    assert re.search(r"refused\s+│\s+3\b", output), output
    code, output = await run_cli("deid", "files", str(source), str(second), "--deid", address)
    assert code == 1, output

    written = tree(first)
    # The same bytes on a second run (names may differ only where two sources share a SOP
    # Instance UID: which one takes the plain name depends on finishing order).
    assert sorted(written.values()) == sorted(tree(second).values())
    assert len(set(written.values())) == len(written) > 0.6 * expected
    assert not any("Doe" in name for name in written)
    profile = Profile(frozenset())
    problems = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, data in written.items():
            ds = dcmread(io.BytesIO(data))
            problems += [f"{name}: {v}" for v in violations(ds, profile)]
    assert not problems, "\n".join(problems[:20])
    # Pixel data kept: an uncompressed sample's pixels are unchanged.
    original = dcmread(next(p for p in files if p.name == "CT_small.dcm"))
    copies = [dcmread(io.BytesIO(d)) for d in written.values()]
    assert any(c.get("PixelData") == original.PixelData for c in copies)
