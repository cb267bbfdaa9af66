"""Benchmark of the index: load synthetic studies through the indexer's own upsert, then time
the queries a PACS answers all day.

Rows are generated directly (no DICOM files: building 100 000 datasets would measure pydicom),
but they go through :func:`pacs_indexer.indexing.upsert_instances`, the code the event handler
runs, in batches. Queries go through :func:`pacs_indexer.query.find` and the metadata functions,
the code behind QueryService (without the gRPC hop).

    uv run python services/indexer/bench/bench_index.py                  # 10 000 studies, both
    uv run python services/indexer/bench/bench_index.py --studies 100000 --backend postgresql
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from pacs_indexer.attributes import Level
from pacs_indexer.database import Database
from pacs_indexer.indexing import upsert_instances
from pacs_indexer.query import FindQuery, find, instance_metadata, study_metadata_page
from pacs_indexer.records import InstanceRecord, StoredObject
from rich.console import Console
from rich.table import Table

TENANT = "bench"
LAST = [
    f"{a}{b}"
    for a in (
        "SMITH",
        "JONES",
        "MILLER",
        "BROWN",
        "GARCIA",
        "WILSON",
        "MOORE",
        "TAYLOR",
        "ANDERSON",
        "THOMAS",
    )
    for b in (
        "",
        "SON",
        "MAN",
        "ER",
        "S",
        "TON",
        "LEY",
        "FORD",
        "WOOD",
        "BY",
        "HAM",
        "DALE",
        "FIELD",
        "WELL",
        "HILL",
        "BERG",
        "STEIN",
        "OV",
        "ESCU",
        "INI",
    )
]
FIRST = [
    "JOHN",
    "JANE",
    "ANNA",
    "PETER",
    "MARIA",
    "LUCAS",
    "EMMA",
    "NOAH",
    "OLIVIA",
    "LIAM",
    "SOFIA",
    "HUGO",
    "LEA",
    "PAUL",
    "ZOE",
    "IVAN",
    "NINA",
    "OMAR",
    "RUTH",
    "ELI",
]
MODALITIES = ["CT", "MR", "CR", "US", "DX", "MG", "PT", "NM"]
HEADER = (
    '{{"00080016":{{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]}},'
    '"00080018":{{"vr":"UI","Value":["{sop}"]}},"00080020":{{"vr":"DA","Value":["{date}"]}},'
    '"00080050":{{"vr":"SH","Value":["{accession}"]}},'
    '"00080060":{{"vr":"CS","Value":["{modality}"]}},'
    '"00080070":{{"vr":"LO","Value":["ACME MEDICAL"]}},'
    '"00080080":{{"vr":"LO","Value":["GENERAL HOSPITAL"]}},'
    '"00100010":{{"vr":"PN","Value":[{{"Alphabetic":"{name}"}}]}},'
    '"00100020":{{"vr":"LO","Value":["{pid}"]}},'
    '"00180050":{{"vr":"DS","Value":[1.25]}},"00200013":{{"vr":"IS","Value":[{number}]}},'
    '"00200032":{{"vr":"DS","Value":[-125.0,-125.0,{number}.5]}},'
    '"00200037":{{"vr":"DS","Value":[1,0,0,0,1,0]}},"00280010":{{"vr":"US","Value":[512]}},'
    '"00280011":{{"vr":"US","Value":[512]}},"00280100":{{"vr":"US","Value":[16]}}}}'
)


@dataclass
class Generated:
    """What the loader produced, to pick query parameters that exist."""

    names: list[str] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    accessions: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    sops: list[str] = field(default_factory=list)


def uid(prefix: str, *parts: int) -> str:
    """A valid, unique-enough UID under a fixed root."""
    return ".".join([f"2.25.{prefix}", *(str(p) for p in parts)])


def synthetic(studies: int, per_series: int, seed: int, out: Generated) -> Iterator[InstanceRecord]:
    """Instances of ``studies`` studies: 2 studies per patient, 1-3 series per study,
    ``2 * per_series`` instances per study (10 by default)."""
    rng = random.Random(seed)  # noqa: S311  (synthetic data, not security)
    run = rng.randrange(10**12)
    for s in range(studies):
        patient = s // 2
        name = f"{LAST[patient % len(LAST)]}^{FIRST[(patient // len(LAST)) % len(FIRST)]}"
        pid = f"P{patient:08d}"
        accession = f"A{s:09d}"
        study_uid = uid(str(run), 1, s)
        date = f"{2019 + s % 6}{1 + (s // 6) % 12:02d}{1 + (s // 72) % 28:02d}"
        time_ = f"{8 + s % 10:02d}{s % 60:02d}00"
        out.names.append(name)
        out.patient_ids.append(pid)
        out.accessions.append(accession)
        out.studies.append(study_uid)
        series_count = 1 + (s % 3)
        for k in range(series_count):
            modality = MODALITIES[(s + k) % len(MODALITIES)]
            series_uid = uid(str(run), 2, s, k)
            per_study = 2 * per_series
            count = per_study // series_count + (per_study % series_count if k == 0 else 0)
            for n in range(count):
                sop = uid(str(run), 3, s, k, n)
                if n == 0 and k == 0:
                    out.sops.append(sop)
                yield InstanceRecord(
                    tenant=TENANT,
                    study_instance_uid=study_uid,
                    series_instance_uid=series_uid,
                    sop_instance_uid=sop,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    patient_id=pid,
                    patient_name=name,
                    patient_birth_date=f"19{40 + patient % 60}0101",
                    patient_sex="MF"[patient % 2],
                    study_date=date,
                    study_time=time_,
                    accession_number=accession,
                    study_description="BENCH STUDY",
                    modality=modality,
                    series_number=k + 1,
                    instance_number=n + 1,
                    stored=StoredObject(
                        key=f"{TENANT}/{study_uid}/{series_uid}/{sop}",
                        size=525_000,
                        stored_time="2024-01-01T00:00:00Z",
                        transfer_syntax_uid="1.2.840.10008.1.2.1",
                    ),
                    dicom_json=HEADER.format(
                        sop=sop,
                        date=date,
                        accession=accession,
                        modality=modality,
                        name=name,
                        pid=pid,
                        number=n + 1,
                    ),
                )


def load(database: Database, records: Iterator[InstanceRecord], batch: int) -> tuple[int, float]:
    """Upsert everything in batches; returns (instances, seconds)."""
    started = time.perf_counter()
    total = 0
    chunk: list[InstanceRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= batch:
            with database.session() as session:
                upsert_instances(session, chunk)
            total += len(chunk)
            chunk = []
    if chunk:
        with database.session() as session:
            upsert_instances(session, chunk)
        total += len(chunk)
    return total, time.perf_counter() - started


def queries(
    database: Database, data: Generated, rng: random.Random
) -> dict[str, Callable[[], int]]:
    """Each named query as a callable returning the number of results it produced."""

    def run(level: Level, match: dict[str, str], limit: int = 100, fuzzy: bool = False) -> int:
        with database.session() as session:
            result = find(
                session,
                FindQuery(tenant=TENANT, level=level, match=match, limit=limit, fuzzy=fuzzy),
                max_results=1000,
            )
            return len(result.datasets)

    def name_wildcard() -> int:
        last, first = rng.choice(data.names).split("^")
        return run(Level.STUDY, {"PatientName": f"{last}^{first[0]}*", "PatientID": ""})

    def name_fuzzy() -> int:
        last = rng.choice(data.names).split("^")[0]
        return run(Level.STUDY, {"PatientName": f"{last[:5].lower()}*"}, fuzzy=True)

    def patient_id() -> int:
        return run(Level.STUDY, {"PatientID": rng.choice(data.patient_ids)})

    def accession() -> int:
        return run(Level.STUDY, {"AccessionNumber": rng.choice(data.accessions)})

    def date_modality() -> int:
        day = rng.randrange(1, 22)
        month = rng.randrange(1, 13)
        year = rng.randrange(2019, 2025)
        span = f"{year}{month:02d}{day:02d}-{year}{month:02d}{day + 7:02d}"
        return run(Level.STUDY, {"StudyDate": span, "ModalitiesInStudy": "CT"})

    def drill_down() -> int:
        study = rng.choice(data.studies)
        with database.session() as session:
            series = find(
                session,
                FindQuery(tenant=TENANT, level=Level.SERIES, match={"StudyInstanceUID": study}),
                1000,
            )
            found = 0
            for dataset in series.datasets:
                series_uid = dataset["0020000E"]["Value"][0]
                found += len(
                    find(
                        session,
                        FindQuery(
                            tenant=TENANT,
                            level=Level.IMAGE,
                            match={"StudyInstanceUID": study, "SeriesInstanceUID": series_uid},
                        ),
                        1000,
                    ).datasets
                )
            return found

    def metadata() -> int:
        with database.session() as session:
            return len(instance_metadata(session, TENANT, "", "", rng.choice(data.sops)))

    def study_metadata() -> int:
        with database.session() as session:
            page = study_metadata_page(
                session, TENANT, rng.choice(data.studies), "", offset=0, limit=200
            )
            return len(page)

    return {
        "PatientName wildcard (DOE^J*)": name_wildcard,
        "PatientName fuzzy (doe*)": name_fuzzy,
        "PatientID": patient_id,
        "AccessionNumber": accession,
        "StudyDate week + ModalitiesInStudy=CT": date_modality,
        "study UID → series → instances": drill_down,
        "instance metadata": metadata,
        "study metadata (all headers)": study_metadata,
    }


def measure(call: Callable[[], int], repeat: int) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, mean results) over ``repeat`` runs after two warm-up runs."""
    call()
    call()
    times, sizes = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        sizes.append(call())
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, statistics.mean(sizes)


def postgres_database(url: str) -> tuple[str, Callable[[], None]]:
    """A fresh database on the server of ``url``, and how to drop it."""
    name = f"bench_index_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False), drop


def default_postgres_url() -> str:
    """PACS_TEST_POSTGRES_URL, from the environment or .cache/run/infra.env."""
    if "PACS_TEST_POSTGRES_URL" in os.environ:
        return os.environ["PACS_TEST_POSTGRES_URL"]
    env = Path(__file__).resolve().parents[3] / ".cache" / "run" / "infra.env"
    if env.exists():
        for line in env.read_text().splitlines():
            if line.startswith("PACS_TEST_POSTGRES_URL="):
                return line.split("=", 1)[1].strip()
    return "postgresql+psycopg://postgres@127.0.0.1:15432/cloudpacs"


def bench(backend: str, args: argparse.Namespace, console: Console) -> list[tuple[str, ...]]:
    """Load and query one backend; returns table rows."""
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "sqlite":
        folder = tempfile.TemporaryDirectory(prefix="bench-index-")
        url = f"sqlite:///{folder.name}/index.sqlite"
        cleanup = folder.cleanup
    else:
        url, cleanup = postgres_database(args.postgres_url)
    database = Database(url)
    try:
        database.create_schema()
        data = Generated()
        count, seconds = load(
            database, synthetic(args.studies, args.per_series, args.seed, data), args.batch
        )
        # What the running service does for SQLite (Database.refresh_statistics), and what
        # PostgreSQL's autovacuum does some time after a bulk load.
        with database.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
        console.print(
            f"[bold]{backend}[/]: loaded {count} instances of {args.studies} studies in "
            f"{seconds:.1f} s ({count / seconds:,.0f} instances/s, batches of {args.batch})"
        )
        rows: list[tuple[str, ...]] = []
        rng = random.Random(args.seed + 1)  # noqa: S311  (query parameters)
        for label, call in queries(database, data, rng).items():
            p50, p95, size = measure(call, args.repeat)
            rows.append((backend, label, f"{p50:.2f}", f"{p95:.2f}", f"{size:.1f}"))
        rows.append((backend, "load (instances/s)", f"{count / seconds:,.0f}", "", str(count)))
        return rows
    finally:
        database.dispose()
        cleanup()


def main() -> None:
    """Parse arguments, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--per-series", type=int, default=5, help="instances per series (≈)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", default=default_postgres_url())
    parser.add_argument("--batch", type=int, default=2000, help="instances per transaction")
    parser.add_argument("--repeat", type=int, default=50, help="runs per query")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    console = Console(width=110)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:  # each table as soon as it is known
        table = Table(
            title=f"{backend}: {args.studies} studies, {args.repeat} runs per query",
            width=100,
        )
        for column in ("backend", "query", "p50 ms", "p95 ms", "results"):
            table.add_column(column, justify="left" if column in ("backend", "query") else "right")
        for row in bench(backend, args, console):
            table.add_row(*row)
        console.print(table)


if __name__ == "__main__":
    main()
