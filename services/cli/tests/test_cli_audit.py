"""``pacs audit list`` and ``pacs audit verify`` run as a process, as an operator runs them,
against a real audit service with a hydra client of the test's tenant (role audit-read)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_audit.app import AuditApp
from pacs_common import audit_events
from pacs_common.auth import Role
from pacs_testkit.audit import audit_topic, start_audit
from pacs_testkit.hydra import Hydra

pytestmark = pytest.mark.integration


@pytest.fixture
async def audit(infra_env: dict[str, str], tmp_path: Path) -> AsyncIterator[AuditApp]:
    app = await start_audit(tmp_path, audit_topic())
    yield app
    await app.stop()


def _env_of(hydra: Hydra, tenant: str, roles: list[Role]) -> dict[str, str]:
    client = hydra.client(tenant, roles)
    return {
        "PACS_CLI_CLIENT_ID": client.client_id,
        "PACS_CLI_CLIENT_SECRET": client._secret.get_secret_value(),
        "PACS_CLI_TOKEN_URL": hydra.token_url,
    }


async def _pacs(audit: AuditApp, env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pacs_cli", "audit", *args,
        "--audit", f"127.0.0.1:{audit.grpc_port}",
        env={**os.environ, "COLUMNS": "250", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode() + err.decode()


class _Caller:
    def __init__(self, tenant: str, ae: str) -> None:
        self.tenant, self.calling_ae_title, self.address, self.user = tenant, ae, "10.0.0.9", None


def _seed(audit: AuditApp, tenant: str) -> None:
    now = datetime.now(UTC)
    events = []
    for patient, ae, age in (("PX-1", "VIEWER1", 0), ("PX-2", "VIEWER2", 0), ("PX-1", "OLD", 2880)):
        event = audit_events.dicom_instances_stored(
            _Caller(tenant, ae), "CLOUDPACS", study_instance_uid=f"1.2.{len(events)}",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2", part10=b"", ok=True,
        )  # fmt: skip
        assert event is not None
        event.patient_id = patient
        event.id = str(uuid.uuid4())
        moment = now - timedelta(minutes=age)
        event.event_time = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        event.source = "gateway"
        events.append(event)
    audit.trail.append(events)


async def test_who_accessed_patient_x(audit: AuditApp, hydra: Hydra, tenant: str) -> None:
    _seed(audit, tenant)
    env = _env_of(hydra, tenant, [Role.AUDIT_READ])
    code, out = await _pacs(audit, env, "list", "--since", "10m", "--patient", "PX-1", "--json")
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 1, out  # the 2-day-old record is outside --since 10m
    record = lines[0]
    assert record["event_id"] == "110104"
    assert (record["action"], record["outcome"], record["actor"]) == ("C", 0, "VIEWER1")
    assert record["patient_id"] == "PX-1"
    assert record["study_instance_uids"] == ["1.2.0"]
    assert record["time"]

    code, out = await _pacs(audit, env, "list", "--patient", "PX-1", "--json")
    assert len([line for line in out.splitlines() if line.startswith("{")]) == 2, out
    code, out = await _pacs(audit, env, "list")
    assert code == 0 and "VIEWER2" in out and "Transferred" in out, out

    other = _env_of(hydra, f"{tenant}-other", [Role.AUDIT_READ])
    code, out = await _pacs(audit, other, "list", "--json")
    assert (code, out.strip()) == (0, ""), out
    code, out = await _pacs(audit, _env_of(hydra, tenant, [Role.QUERY]), "list")
    assert code != 0 and "PERMISSION_DENIED" in out, out


async def test_verify_exits_non_zero_naming_the_bad_record(
    audit: AuditApp, hydra: Hydra, tenant: str, tmp_path: Path
) -> None:
    _seed(audit, tenant)
    env = _env_of(hydra, tenant, [Role.AUDIT_READ])
    code, out = await _pacs(audit, env, "verify")
    assert code == 0 and "intact:" in out, out

    event = audit_pb.AuditEvent()
    with sqlite3.connect(tmp_path / "audit.sqlite") as db:
        seq, payload = db.execute(
            "SELECT seq, payload FROM audit_records WHERE patient_id = 'PX-2'"
        ).fetchone()
        event.ParseFromString(payload)
        event.patient_id = "SOMEONE-ELSE"
        db.execute(
            "UPDATE audit_records SET payload = ?, patient_id = ? WHERE seq = ?",
            (event.SerializeToString(), "SOMEONE-ELSE", seq),
        )
    code, out = await _pacs(audit, env, "verify")
    assert code == 1, out
    assert f"record {seq}: changed" in out, out
