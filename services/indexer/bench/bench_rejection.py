"""Benchmark of IHE IOCM rejection notes in the index writer: what the rejection check costs
every batch of stored instances, and how long applying a note takes.

Each row indexes N synthetic CT headers (10 per series, 5 series per study) through the
indexer's writer (:func:`pacs_indexer.indexing.upsert_instances`, batches of 200, the
consumer's default), into a fresh index:

- ``no IOCM step``: the writer with the rejection step replaced by a pass-through (the writer
  as it was before rejection notes), the baseline;
- ``IOCM, no rejections``: the writer as shipped, with an empty ``rejected_instances`` table;
- ``IOCM, R rejected``: the same with R rejected instances of other studies already recorded.

Then one note rejecting ``--rejected`` indexed instances is applied, and timed. Figures are
wall time and this process's CPU (user + system) per instance; the database server's CPU
(PostgreSQL) is not counted. No peer is measured: no archive at hand implements IOCM (Orthanc
does not; dcm4chee is not installed here).

    uv run python services/indexer/bench/bench_rejection.py [--instances 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import psutil
from pacs_common.local import infra_environment
from pacs_indexer import indexing
from pacs_indexer.database import Database
from pacs_indexer.indexing import upsert_instances
from pacs_indexer.records import InstanceRecord, StoredObject, now_rfc3339, record_from_dataset
from pacs_indexer.rejection import REJECTED
from pacs_testkit.postgres import DEFAULT_URL, scratch_database
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, generate_uid
from rich.console import Console
from rich.table import Table

TENANT = "bench"
BATCH = 200
PATIENT = {
    "PatientID": "BENCH",
    "PatientName": "Bench^Iocm",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "StudyDate": "20260101",
    "StudyTime": "120000",
    "StudyID": "1",
    "AccessionNumber": "A1",
    "ReferringPhysicianName": "",
    "Manufacturer": "bench",
}


def _headers(count: int, first_study: int) -> list[Dataset]:
    """``count`` headers: the first ``first_study`` in one study (a KOS references one study,
    highdicom's rule), then 50 per study; 10 per series."""
    datasets: list[Dataset] = []
    study = series = ""
    for n in range(count):
        if n == 0 or (n >= first_study and (n - first_study) % 50 == 0):
            study = generate_uid()
        if n % 10 == 0:
            series = generate_uid()
        ds = Dataset()
        ds.SOPClassUID, ds.Modality = CTImageStorage, "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = n % 10 + 1
        for keyword, value in PATIENT.items():
            setattr(ds, keyword, value)
        datasets.append(ds)
    return datasets


def _record(ds: Dataset) -> InstanceRecord:
    stored = StoredObject(
        key=f"{TENANT}/{ds.SOPInstanceUID}",
        size=1000,
        stored_time=now_rfc3339(),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    return record_from_dataset(TENANT, ds, stored)


def _note(rejected: Sequence[Dataset]) -> InstanceRecord:
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.RejectedForQualityReasons, referenced_objects=rejected
    )
    document = hd.ko.KeyObjectSelectionDocument(
        evidence=rejected,
        content=content,
        series_instance_uid=generate_uid(),
        series_number=99,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    buffer = DicomBytesIO()
    document.save_as(buffer, enforce_file_format=True)
    return _record(dcmread(DicomBytesIO(buffer.getvalue())))


def _seed_rejections(database: Database, count: int) -> None:
    rows = [
        {
            "tenant": TENANT,
            "sop_instance_uid": generate_uid(),
            "study_instance_uid": "1.2.3",
            "series_instance_uid": "1.2.3.4",
            "sop_class_uid": CTImageStorage,
            "patient_id": "",
            "reason_code": "113001",
            "note_sop_instance_uid": "1.2.3.5",
            "rejected_time": now_rfc3339(),
            "stored_time": "",
            "deleted_time": "",
        }
        for _ in range(count)
    ]
    with database.session() as session:
        session.connection().execute(REJECTED.insert(), rows)


def _timed(work: Callable[[], None]) -> tuple[float, float]:
    process = psutil.Process()
    cpu0, wall0 = process.cpu_times(), time.perf_counter()
    work()
    cpu1, wall1 = process.cpu_times(), time.perf_counter()
    return wall1 - wall0, (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)


def _index(database: Database, records: list[InstanceRecord]) -> None:
    for start in range(0, len(records), BATCH):
        with database.session() as session:
            upsert_instances(session, records[start : start + BATCH])


@contextlib.contextmanager
def _without_iocm() -> Iterator[None]:
    original = indexing.withhold_rejected
    indexing.withhold_rejected = lambda conn, records, touched: list(records)  # type: ignore[assignment]
    try:
        yield
    finally:
        indexing.withhold_rejected = original


@contextlib.contextmanager
def _databases(backend: str) -> Iterator[Callable[[], Database]]:
    """Fresh, migrated indexes of one backend."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield lambda: _fresh(f"sqlite:///{Path(folder) / uuid.uuid4().hex}.sqlite")
        return
    url = infra_environment().get("PACS_TEST_POSTGRES_URL", DEFAULT_URL)
    with contextlib.ExitStack() as stack:
        yield lambda: _fresh(stack.enter_context(scratch_database(url, prefix="bench_iocm")))


def _fresh(url: str) -> Database:
    database = Database(url)
    database.create_schema()
    return database


def run(
    backend: str, instances: int, rejected: int, seeded: int, runs: int
) -> list[tuple[Any, ...]]:
    """The median of ``runs`` rounds of each measurement (configurations interleaved, so that
    the machine's load drifts over all of them alike)."""
    rounds = [_round(backend, instances, rejected, seeded) for _ in range(runs)]
    result = []
    for measured in zip(*rounds, strict=True):
        ordered = sorted(measured, key=lambda row: row[3])
        result.append(ordered[len(ordered) // 2])
    return result


def _round(backend: str, instances: int, rejected: int, seeded: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    with _databases(backend) as new_database:
        for label, seed, plain in (
            ("no IOCM step (baseline)", 0, True),
            ("IOCM, no rejections", 0, False),
            (f"IOCM, {seeded} rejected", seeded, False),
        ):
            database = new_database()
            if seed:
                _seed_rejections(database, seed)
            datasets = _headers(instances, rejected)
            records = [_record(ds) for ds in datasets]
            with _without_iocm() if plain else contextlib.nullcontext():
                wall, cpu = _timed(lambda db=database, r=records: _index(db, r))
            rows.append((backend, label, instances, instances / wall, cpu / instances * 1e3))
            if not plain and not seed:
                note = _note(datasets[:rejected])

                def apply(db: Database = database, n: InstanceRecord = note) -> None:
                    with db.session() as session:
                        upsert_instances(session, [n])

                wall, cpu = _timed(apply)
                rows.append(
                    (backend, f"apply a note rejecting {rejected}", rejected, rejected / wall,
                     cpu / rejected * 1e3)
                )  # fmt: skip
            database.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--rejected", type=int, default=500)
    parser.add_argument("--seeded", type=int, default=20000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--runs", type=int, default=3, help="rounds; the median is shown")
    args = parser.parse_args()
    table = Table(
        title=f"IOCM rejection notes in the index writer (batch {BATCH}, median of {args.runs})"
    )
    for column in ("backend", "what", "instances", "instances/s", "CPU ms/instance"):
        table.add_column(column, justify="left" if column in ("backend", "what") else "right")
    for backend in args.backends.split(","):
        for row in run(backend, args.instances, args.rejected, args.seeded, args.runs):
            table.add_row(row[0], row[1], str(row[2]), f"{row[3]:,.0f}", f"{row[4]:.2f}")
    Console().print(table)
    Console().print(
        "Bounded by the database writes (one transaction per batch, on this shared 2-core "
        "machine under other agents' load); PostgreSQL server CPU not counted; no peer (no "
        "IOCM archive available here)."
    )


if __name__ == "__main__":
    main()
