"""``pacs index check`` finds where the index and storage disagree, both ways, and
``pacs reindex`` repairs the index from storage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
import sqlalchemy as sa
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.e2e.e2e_support import RunningStack, run_dcmtk, s3_client

pytestmark = pytest.mark.e2e


def pacs(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pacs_cli", *args, "--indexer", f"127.0.0.1:{stack.indexer_port}"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},  # room for whole UIDs in the tables
        timeout=120,
        check=False,
    )


def index_url(stack: RunningStack) -> str:
    """The indexer's database (SQLite in the run folder, or the PostgreSQL one it was given)."""
    return stack.stack.config.env.get(
        "PACS_INDEXER_DATABASE_URL", f"sqlite:///{stack.run_dir / 'index.sqlite'}"
    )


def index_execute(stack: RunningStack, statement: str, **values: str) -> list[Any]:
    """Run one statement on the index behind the indexer's back; the rows it returns."""
    engine = sa.create_engine(index_url(stack))
    try:
        with engine.begin() as connection:
            result = connection.execute(sa.text(statement), values)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def index_holds(stack: RunningStack, sop_uid: str) -> bool:
    rows = index_execute(
        stack,
        "SELECT count(*) FROM instances WHERE tenant = :tenant AND sop_instance_uid = :sop",
        tenant=stack.tenant,
        sop=sop_uid,
    )
    return bool(rows[0][0])


def test_check_finds_discrepancies_and_reindex_repairs_them(
    e2e_stack: RunningStack, infra_env: dict[str, str]
) -> None:
    ct, mr = (str(get_testdata_file(name)) for name in ("CT_small.dcm", "MR_small.dcm"))
    result = run_dcmtk(
        ["storescu", "-aec", e2e_stack.ae_title, "127.0.0.1", str(e2e_stack.dicom_port), ct, mr]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ct_uid = str(dcmread(ct, stop_before_pixels=True).SOPInstanceUID)
    mr_uid = str(dcmread(mr, stop_before_pixels=True).SOPInstanceUID)
    deadline = time.monotonic() + 60
    while not (index_holds(e2e_stack, ct_uid) and index_holds(e2e_stack, mr_uid)):
        assert time.monotonic() < deadline, "instances not indexed"
        time.sleep(0.3)

    healthy = pacs(e2e_stack, "index", "check", "--tenant", e2e_stack.tenant)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "0 not indexed, 0 not in storage" in healthy.stdout

    # Lose the CT's index row behind the indexer's back, and the MR's object behind storage's.
    index_execute(e2e_stack, "DELETE FROM instances WHERE sop_instance_uid = :sop", sop=ct_uid)
    s3 = s3_client(infra_env)
    mr_keys = [
        obj["Key"]
        for obj in s3.list_objects_v2(Bucket=e2e_stack.bucket).get("Contents", [])
        if obj["Key"].endswith(f"/{mr_uid}.dcm")
    ]
    assert len(mr_keys) == 1
    s3.delete_object(Bucket=e2e_stack.bucket, Key=mr_keys[0])

    broken = pacs(e2e_stack, "index", "check", "--tenant", e2e_stack.tenant)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "1 not indexed, 1 not in storage" in broken.stdout
    assert ct_uid in broken.stdout and mr_uid in broken.stdout

    repaired = pacs(e2e_stack, "reindex", "--tenant", e2e_stack.tenant)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert index_holds(e2e_stack, ct_uid)
    after = pacs(e2e_stack, "index", "check", "--tenant", e2e_stack.tenant)
    # The reindex restores what storage holds; the MR whose object is gone stays reported.
    assert "0 not indexed, 1 not in storage" in after.stdout, after.stdout
