"""Deletion, legal holds and retention through the operator's path: studies sent with DCMTK
``storescu`` to the real stack (gateway, storage on the S3 server, Kafka, the indexer on SQLite
and on PostgreSQL), then ``pacs delete`` / ``pacs hold`` / ``pacs retention run`` run as
processes with the CLI's admin client; checked with DCMTK ``findscu``, the S3 server's own
``ListObjectVersions``, and the audit trail (``pacs audit list``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pacs_common.auth import Role
from pacs_testkit.hydra import Hydra
from pacs_testkit.postgres import DEFAULT_URL, scratch_database
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.e2e.e2e_support import RunningStack, findscu, run_dcmtk, running_stack, s3_client

pytestmark = pytest.mark.e2e

# Retention of the stack's tenant: 10 years, 25 for a patient under 18 at the study.
RETENTION = {"*": {"years": 10, "pediatric_years": 25}}
AS_OF = "20260615"
RECENT = "20260101"  # never due: the studies of the deletion tests
CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest,
    infra_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningStack]:
    """The e2e stack with a retention rule, on each index database."""
    run_dir = tmp_path_factory.mktemp(f"lifecycle-{request.param}")
    env = {"PACS_INDEXER_RETENTION": json.dumps(RETENTION)}
    if request.param == "sqlite":
        with running_stack(infra_env, run_dir, env) as running:
            yield running
        return
    url = infra_env.get("PACS_TEST_POSTGRES_URL", DEFAULT_URL)
    with (
        scratch_database(url, prefix="e2e_lifecycle") as database_url,
        running_stack(infra_env, run_dir, {**env, "PACS_INDEXER_DATABASE_URL": database_url}) as r,
    ):
        yield r


def pacs(stack: RunningStack, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``pacs <args> --indexer …`` as an operator does; its output (stdout + stderr), with
    the exit status on the first line so that a test asserts both at once."""
    result = subprocess.run(
        [sys.executable, "-m", "pacs_cli", *args, "--indexer", f"127.0.0.1:{stack.indexer_port}"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250", **(env or {})},  # room for whole UIDs in tables
        timeout=180,
        check=False,
    )
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


def make_study(
    folder: Path,
    *,
    patient: str,
    birth: str = "19600101",
    study_date: str = RECENT,
    series: int = 1,
    per_series: int = 1,
) -> tuple[str, list[list[Path]]]:
    """Files of one new study (CT_small with new UIDs): its UID and each series' files."""
    study_uid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    files: list[list[Path]] = []
    for _ in range(series):
        series_uid = generate_uid()
        files.append([])
        for number in range(per_series):
            ds = dcmread(CT_SMALL)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.PatientID, ds.PatientBirthDate, ds.StudyDate = patient, birth, study_date
            ds.InstanceNumber = number + 1
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path)
            files[-1].append(path)
    return study_uid, files


def store(stack: RunningStack, *paths: Path) -> None:
    result = run_dcmtk(
        ["storescu", "-aec", stack.ae_title, "127.0.0.1", str(stack.dicom_port), *map(str, paths)]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def find(stack: RunningStack, folder: Path, level: str, study: str, *keys: str) -> list[Any]:
    """DCMTK findscu at ``level`` within ``study``."""
    return findscu(stack, folder, f"QueryRetrieveLevel={level}", f"StudyInstanceUID={study}", *keys)


def wait_indexed(stack: RunningStack, folder: Path, study: str, instances: int) -> None:
    """Until C-FIND reports the study with ``instances`` instances (indexing is asynchronous)."""
    deadline = time.monotonic() + 90
    attempt = 0
    while True:
        attempt += 1
        found = find(
            stack, folder / f"wait{attempt}", "STUDY", study, "NumberOfStudyRelatedInstances"
        )
        if found and int(found[0].NumberOfStudyRelatedInstances) == instances:
            return
        assert time.monotonic() < deadline, f"study not indexed with {instances} instances"
        time.sleep(0.5)


def stored_versions(infra_env: dict[str, str], stack: RunningStack, study: str) -> list[str]:
    """Every object version and delete marker the S3 server holds under the study's prefix
    (storage's own earlier versions live under ``….versions/`` beside the current object)."""
    response = s3_client(infra_env).list_object_versions(
        Bucket=stack.bucket, Prefix=f"{stack.tenant}/{study}/"
    )
    return [v["Key"] for v in response.get("Versions", []) + response.get("DeleteMarkers", [])]


def wait_for(condition: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_pacs_delete_removes_a_study_from_the_index_and_every_stored_version(
    stack: RunningStack, infra_env: dict[str, str], hydra: Hydra, tmp_path: Path
) -> None:
    study, series = make_study(tmp_path / "in", patient="DEL-1", series=2, per_series=2)
    store(stack, *series[0], *series[1])
    # The first instance again with other bytes: storage keeps the first bytes as a version.
    changed = dcmread(series[0][0])
    changed.ImageComments = "second version"
    changed.save_as(tmp_path / "changed.dcm")
    store(stack, tmp_path / "changed.dcm")
    wait_indexed(stack, tmp_path, study, 4)
    wait_for(
        lambda: len(stored_versions(infra_env, stack, study)) == 5,
        "four current objects and one earlier version in S3",
    )

    deleted = pacs(stack, "delete", "--study", study, "--yes", "--reason", "test")
    found = find(stack, tmp_path / "after", "STUDY", study)
    found_images = find(stack, tmp_path / "after-images", "IMAGE", study, "SOPInstanceUID")
    left_in_s3 = stored_versions(infra_env, stack, study)
    again = pacs(stack, "delete", "--study", study, "--yes")

    assert deleted.startswith("exit 0"), deleted
    assert "4 instances, 5 stored versions" in deleted
    assert found == [] and found_images == []
    assert left_in_s3 == []
    assert again.startswith("exit 0"), again
    assert "nothing to delete" in again
    audit = hydra.client(stack.tenant, [Role.AUDIT_READ])
    audit_env = {
        "PACS_CLI_CLIENT_ID": audit.client_id,
        "PACS_CLI_CLIENT_SECRET": audit._secret.get_secret_value(),
    }

    def audited() -> list[dict[str, Any]]:
        result = subprocess.run(
            [sys.executable, "-m", "pacs_cli", "audit", "list", "--since", "30m", "--json",
             "--study", study, "--type", "110105",
             "--audit", f"127.0.0.1:{stack.stack.config.audit_port}"],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, **audit_env},
        )  # fmt: skip
        return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    wait_for(lambda: bool(audited()), "a DICOM Study Deleted audit record", timeout_s=90)
    record = audited()[0]
    assert record["event"] == "DICOM Study Deleted"
    assert record["action"] == "D"
    assert record["patient_id"] == "DEL-1"
    assert len(audited()) == 1, "deleting what is gone changes nothing and audits nothing"


def test_pacs_delete_of_an_instance_and_of_a_series_leaves_the_rest(
    stack: RunningStack, infra_env: dict[str, str], tmp_path: Path
) -> None:
    study, series = make_study(tmp_path / "in", patient="DEL-2", series=2, per_series=2)
    store(stack, *series[0], *series[1])
    wait_indexed(stack, tmp_path, study, 4)
    one = dcmread(series[0][0], stop_before_pixels=True)
    second_series = str(dcmread(series[1][0], stop_before_pixels=True).SeriesInstanceUID)

    by_instance = pacs(stack, "delete", "--study", study, "--instance", one.SOPInstanceUID, "-y")
    by_series = pacs(stack, "delete", "--study", study, "--series", second_series, "-y")
    images = find(stack, tmp_path / "left", "IMAGE", study, "SOPInstanceUID")
    in_s3 = stored_versions(infra_env, stack, study)

    assert by_instance.startswith("exit 0") and "1 instances" in by_instance, by_instance
    assert by_series.startswith("exit 0") and "2 instances" in by_series, by_series
    remaining = str(dcmread(series[0][1], stop_before_pixels=True).SOPInstanceUID)
    assert [str(ds.SOPInstanceUID) for ds in images] == [remaining]
    assert len(in_s3) == 1 and remaining in in_s3[0]


def test_a_legal_hold_refuses_deletion_until_it_is_released(
    stack: RunningStack, infra_env: dict[str, str], tmp_path: Path
) -> None:
    study, series = make_study(tmp_path / "in", patient="HOLD-1")
    store(stack, *series[0])
    wait_indexed(stack, tmp_path, study, 1)

    set_patient = pacs(stack, "hold", "set", "--patient", "HOLD-1", "--reason", "litigation 42")
    refused = pacs(stack, "delete", "--study", study, "--yes")
    listed = pacs(stack, "hold", "list")
    released = pacs(stack, "hold", "release", "--patient", "HOLD-1")
    set_study = pacs(stack, "hold", "set", "--study", study, "--reason", "audit request")
    refused_by_study = pacs(stack, "delete", "--study", study, "--yes")
    still_found = find(stack, tmp_path / "held", "STUDY", study)
    still_stored = stored_versions(infra_env, stack, study)
    released_study = pacs(stack, "hold", "release", "--study", study)
    deleted = pacs(stack, "delete", "--study", study, "--yes")

    assert set_patient.startswith("exit 0"), set_patient
    assert refused.startswith("exit 1"), refused
    assert "legal hold" in refused and "litigation 42" in refused
    assert "HOLD-1" in listed and "litigation 42" in listed
    assert released.startswith("exit 0") and "released" in released
    assert set_study.startswith("exit 0"), set_study
    assert refused_by_study.startswith("exit 1") and "audit request" in refused_by_study
    assert len(still_found) == 1 and len(still_stored) == 1, "a refused deletion changes nothing"
    assert released_study.startswith("exit 0"), released_study
    assert deleted.startswith("exit 0") and "1 instances" in deleted, deleted
    assert find(stack, tmp_path / "gone", "STUDY", study) == []


def test_retention_reports_first_then_deletes_only_due_unheld_studies(
    stack: RunningStack, infra_env: dict[str, str], tmp_path: Path
) -> None:
    adult_old, a = make_study(
        tmp_path / "a", patient="RET-A", birth="19500101", study_date="20100101"
    )
    adult_new, b = make_study(
        tmp_path / "b", patient="RET-B", birth="19500101", study_date="20200101"
    )
    # 5 at the study in 2010: kept 25 years. 15 at the study in 1995: 25 years are over.
    child_new, c = make_study(
        tmp_path / "c", patient="RET-C", birth="20050101", study_date="20100101"
    )
    child_old, d = make_study(
        tmp_path / "d", patient="RET-D", birth="19800101", study_date="19950101"
    )
    held_old, e = make_study(
        tmp_path / "e", patient="RET-E", birth="19500101", study_date="20000101"
    )
    store(stack, *(files[0][0] for files in (a, b, c, d, e)))
    for study in (adult_old, adult_new, child_new, child_old, held_old):
        wait_indexed(stack, tmp_path / study, study, 1)
    assert pacs(stack, "hold", "set", "--study", held_old, "--reason", "keep").startswith("exit 0")

    dry = pacs(stack, "retention", "run", "--dry-run", "--as-of", AS_OF)
    after_dry = {
        s: bool(find(stack, tmp_path / f"dry-{s}", "STUDY", s)) for s in (adult_old, child_old)
    }
    real = pacs(stack, "retention", "run", "--as-of", AS_OF)
    left = {
        s: bool(find(stack, tmp_path / f"left-{s}", "STUDY", s))
        for s in (adult_old, adult_new, child_new, child_old, held_old)
    }

    assert dry.startswith("exit 0"), dry
    for due in (adult_old, child_old, held_old):
        assert due in dry
    assert adult_new not in dry and child_new not in dry
    assert "skipped: legal hold" in dry
    assert "3 studies due, 1 held; 2 would be deleted. Nothing was deleted." in dry
    assert after_dry == {adult_old: True, child_old: True}
    assert real.startswith("exit 0"), real
    assert "3 studies due, 1 held (skipped), 2 deleted, 0 failed" in real
    assert real.index("studies due under the retention rule") < real.index(f"deleted {adult_old}")
    assert left == {
        adult_old: False,
        adult_new: True,
        child_new: True,
        child_old: False,
        held_old: True,
    }
    assert stored_versions(infra_env, stack, adult_old) == []
    assert stored_versions(infra_env, stack, child_old) == []
    assert pacs(stack, "hold", "release", "--study", held_old).startswith("exit 0")


def test_a_token_without_the_admin_role_is_refused(
    stack: RunningStack, hydra: Hydra, tmp_path: Path
) -> None:
    study, series = make_study(tmp_path / "in", patient="ROLE-1")
    store(stack, *series[0])
    wait_indexed(stack, tmp_path, study, 1)
    query_client = hydra.client(stack.tenant, [Role.QUERY, Role.RETRIEVE])
    env = {
        "PACS_CLI_CLIENT_ID": query_client.client_id,
        "PACS_CLI_CLIENT_SECRET": query_client._secret.get_secret_value(),
    }

    refused = pacs(stack, "delete", "--study", study, "--yes", env=env)
    refused_hold = pacs(stack, "hold", "set", "--study", study, "--reason", "x", env=env)
    refused_retention = pacs(stack, "retention", "run", "--dry-run", env=env)

    for output in (refused, refused_hold, refused_retention):
        assert output.startswith("exit 1"), output
        assert "PERMISSION_DENIED" in output
    assert len(find(stack, tmp_path / "kept", "STUDY", study)) == 1
