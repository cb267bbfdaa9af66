"""Restore drills (docs/operations.md, "Backup and restore"): nothing acknowledged is lost when
the index database or Kafka's events are lost, because storage is the source of truth.

- **Lost index database**: every instance is acknowledged by C-STORE (DCMTK ``storescu``) and
  findable; the indexer is stopped, its database destroyed and an empty one put in its place
  (SQLite: the file is deleted; PostgreSQL: the database is dropped and created again), the
  indexer is started. ``pacs index check`` reports every instance as not indexed, ``pacs
  reindex`` rebuilds the index from storage, and C-FIND (``findscu``) finds every acknowledged
  instance again.
- **Lost Kafka events**: instances are acknowledged while the indexer is stopped, so their
  ``InstanceStored`` events wait in Kafka; then the events are lost the way a lost or rebuilt
  cluster loses them for a consumer: its group restarts at the end of the topic (what
  ``auto.offset.reset=latest`` does on a new cluster). The instances are in storage but not
  found; ``pacs index check`` names them and ``pacs reindex`` makes them findable. (Writes that
  were never announced at all, because storage or the writer died between the PUT and the
  event, are re-announced by storage itself: ``test_self_repair.py``.)

On SQLite and PostgreSQL (the ``e2e_stack`` fixture runs each module on both).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from pacs_common.settings import KafkaSettings
from pacs_testkit.kafka import group_at_end_of_topic
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.e2e.e2e_support import RunningStack, findscu, run_dcmtk

pytestmark = pytest.mark.e2e

STUDIES, PER_STUDY = 3, 5


def pacs(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pacs_cli", *args, "--indexer", f"127.0.0.1:{stack.indexer_port}"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
        timeout=600,
        check=False,
    )


def new_studies(folder: Path) -> dict[str, set[str]]:
    """STUDIES studies of PER_STUDY CT instances under new UIDs, written into ``folder``;
    their SOP Instance UIDs by study."""
    folder.mkdir(parents=True)
    dataset = dcmread(str(get_testdata_file("CT_small.dcm")))
    made: dict[str, set[str]] = {}
    for s in range(STUDIES):
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
        for n in range(PER_STUDY):
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            dataset.InstanceNumber = n + 1
            dataset.save_as(folder / f"{s}-{n}.dcm", enforce_file_format=True)
            made.setdefault(dataset.StudyInstanceUID, set()).add(dataset.SOPInstanceUID)
    return made


def store(stack: RunningStack, folder: Path) -> None:
    """C-STORE every file of ``folder``; storescu exits 0 only if each was acknowledged."""
    files = sorted(str(p) for p in folder.glob("*.dcm"))
    result = run_dcmtk(
        ["storescu", "-aec", stack.ae_title, "127.0.0.1", str(stack.dicom_port), *files]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def found(stack: RunningStack, out_dir: Path, studies: dict[str, set[str]]) -> set[str]:
    """The SOP Instance UIDs that an IMAGE-level C-FIND per study returns."""
    uids: set[str] = set()
    for n, study in enumerate(studies):
        matches = findscu(
            stack,
            out_dir / f"find-{time.monotonic_ns()}-{n}",
            "QueryRetrieveLevel=IMAGE",
            f"StudyInstanceUID={study}",
            "SOPInstanceUID",
        )
        uids |= {str(m.SOPInstanceUID) for m in matches}
    return uids


def wait_all_found(stack: RunningStack, out_dir: Path, studies: dict[str, set[str]]) -> None:
    wanted = set().union(*studies.values())
    deadline = time.monotonic() + 90
    while found(stack, out_dir, studies) != wanted:
        assert time.monotonic() < deadline, "acknowledged instances not findable in 90 s"
        time.sleep(0.5)


def lose_index_database(stack: RunningStack) -> None:
    """Destroy the index database and leave an empty one at the same address."""
    url = sa.engine.make_url(
        stack.stack.config.env.get(
            "PACS_INDEXER_DATABASE_URL", f"sqlite:///{stack.run_dir / 'index.sqlite'}"
        )
    )
    if url.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{url.database}{suffix}").unlink(missing_ok=True)
        return
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{url.database}" WITH (FORCE)'))
            connection.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
    finally:
        admin.dispose()


def restart_indexer_without_its_database(stack: RunningStack) -> None:
    """Stop the indexer, lose its database, start it again (it creates an empty schema)."""
    indexer = stack.stack.process("indexer")
    assert indexer.stop(), "indexer did not stop"
    lose_index_database(stack)
    indexer.start(stack.stack.config.service_env())
    indexer.wait_ready(90)


def reindex_and_check(
    stack: RunningStack, out_dir: Path, studies: dict[str, set[str]]
) -> tuple[str, float]:
    """`pacs index check` names the missing instances; `pacs reindex` brings every one back."""
    wanted = set().union(*studies.values())
    assert found(stack, out_dir, studies) == set()
    broken = pacs(stack, "index", "check", "--tenant", stack.tenant)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"{len(wanted)} not indexed" in broken.stdout, broken.stdout

    started = time.monotonic()
    repaired = pacs(stack, "reindex", "--tenant", stack.tenant)
    seconds = time.monotonic() - started
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "instances indexed, 0 failed" in repaired.stdout, repaired.stdout
    # Every one is findable; a C-FIND that fails on a loaded machine (an A700 while the index
    # is busy) is asked again, as a modality would, within wait_all_found's deadline.
    wait_all_found(stack, out_dir, studies)
    after = pacs(stack, "index", "check", "--tenant", stack.tenant)
    assert "; 0 not indexed," in after.stdout, after.stdout
    return after.stdout, seconds


def test_a_lost_index_database_is_rebuilt_from_storage(
    e2e_stack: RunningStack, tmp_path: Path
) -> None:
    studies = new_studies(tmp_path / "files")
    store(e2e_stack, tmp_path / "files")
    wait_all_found(e2e_stack, tmp_path, studies)

    restart_indexer_without_its_database(e2e_stack)
    _, seconds = reindex_and_check(e2e_stack, tmp_path, studies)
    print(f"reindex of {STUDIES * PER_STUDY} instances after a lost index: {seconds:.1f} s")


def test_events_lost_with_kafka_are_recovered_by_reindex(
    e2e_stack: RunningStack, tmp_path: Path
) -> None:
    indexer = e2e_stack.stack.process("indexer")
    assert indexer.stop(), "indexer did not stop"
    studies = new_studies(tmp_path / "files")
    try:
        # Acknowledged while nobody indexes: the events wait in Kafka...
        store(e2e_stack, tmp_path / "files")
    finally:
        # ...and are lost for the indexer's group before it comes back.
        group = e2e_stack.stack.config.env["PACS_INDEXER_CONSUMER_GROUP"]
        asyncio.run(group_at_end_of_topic(group, KafkaSettings()))
        indexer.start(e2e_stack.stack.config.service_env())
        indexer.wait_ready(90)
    reindex_and_check(e2e_stack, tmp_path, studies)
