"""Benchmark of the retention selection: the indexer's one SQL query
(:func:`pacs_indexer.retention.due_studies`) against what it replaces, reading every study of
the tenant with its patient and deciding in Python.

Studies are loaded through the indexer's own upsert (the synthetic studies of
``bench_index.py``: Study Dates 2019-2024, patients born 1940-1999), then the selection runs as
of 2026-06-15 with a rule of ``--years`` (default 7: about 8 % of the studies due, as in a
daily run over an archive older than its retention period; 5 makes about 40 % due) and a few
legal holds. Both ways must find the same studies; the table shows the median time per run and
the studies of the tenant per second of it.

    uv run python services/indexer/bench/bench_retention.py                # 10 000 studies
    uv run python services/indexer/bench/bench_retention.py --studies 100000 --backend postgresql
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date

import sqlalchemy as sa
from bench_index import TENANT, Generated, default_postgres_url, load, postgres_database, synthetic
from pacs_indexer import lifecycle
from pacs_indexer.database import Database
from pacs_indexer.retention import RetentionRule, due_studies, years_before
from pacs_indexer.schema import LegalHold, Patient, Study
from rich.console import Console
from rich.table import Table

AS_OF = date(2026, 6, 15)
RULE = RetentionRule(years=7, pediatric_years=25)


def python_selection(database: Database, rule: RetentionRule) -> set[str]:
    """The alternative: every study of the tenant read, each decided in Python."""
    adult, child = years_before(AS_OF, rule.years), years_before(AS_OF, rule.pediatric_years or 0)
    due: set[str] = set()
    with database.session() as session:
        held_studies = set(
            session.scalars(
                sa.select(LegalHold.subject).where(
                    LegalHold.tenant == TENANT, LegalHold.level == lifecycle.STUDY
                )
            )
        )
        held_patients = set(
            session.scalars(
                sa.select(LegalHold.subject).where(
                    LegalHold.tenant == TENANT, LegalHold.level == lifecycle.PATIENT
                )
            )
        )
        rows = session.execute(
            sa.select(
                Study.study_instance_uid,
                Study.study_date,
                Patient.patient_birth_date,
                Patient.patient_id,
            )
            .join(Patient, Study.patient_pk == Patient.id)
            .where(Study.tenant == TENANT)
        )
        for uid, day, birth, patient in rows:
            if len(day) != 8 or not day.isdigit():
                continue
            if len(birth) == 8 and birth.isdigit():
                cutoff = child if int(day) - int(birth) < rule.pediatric_age * 10000 else adult
            else:
                cutoff = min(adult, child)
            if day <= cutoff and uid not in held_studies and patient not in held_patients:
                due.add(uid)
    return due


def sql_selection(database: Database, rule: RetentionRule) -> set[str]:
    return {d.study_instance_uid for d in due_studies(database, TENANT, rule, AS_OF) if not d.held}


def timed(call: Callable[[], set[str]], repeat: int) -> tuple[float, set[str]]:
    times, found = [], set()
    for _ in range(repeat):
        started = time.perf_counter()
        found = call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def bench(backend: str, args: argparse.Namespace, console: Console) -> list[tuple[str, ...]]:
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "sqlite":
        folder = tempfile.TemporaryDirectory(prefix="bench-retention-")
        url = f"sqlite:///{folder.name}/index.sqlite"
        cleanup = folder.cleanup
    else:
        url, cleanup = postgres_database(args.postgres_url)
    database = Database(url)
    try:
        database.create_schema()
        data = Generated()
        count, _ = load(database, synthetic(args.studies, 1, 11, data), 2000)
        for uid in data.studies[:: max(1, args.studies // 20)]:
            lifecycle.set_hold(database, TENANT, lifecycle.Hold(lifecycle.STUDY, uid))
        lifecycle.set_hold(database, TENANT, lifecycle.Hold(lifecycle.PATIENT, data.patient_ids[1]))
        with database.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
        console.print(f"[bold]{backend}[/]: {args.studies} studies ({count} instances) loaded")
        rule = RetentionRule(years=args.years, pediatric_years=25)
        sql_s, by_sql = timed(lambda: sql_selection(database, rule), args.repeat)
        py_s, by_python = timed(lambda: python_selection(database, rule), args.repeat)
        assert by_sql == by_python, "the two selections disagree"
        return [
            (backend, "SQL in the index (due_studies)", f"{sql_s * 1000:.1f}",
             f"{args.studies / sql_s:,.0f}", str(len(by_sql))),
            (backend, "read every study, decide in Python", f"{py_s * 1000:.1f}",
             f"{args.studies / py_s:,.0f}", str(len(by_python))),
        ]  # fmt: skip
    finally:
        database.dispose()
        cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", default=default_postgres_url())
    parser.add_argument("--repeat", type=int, default=5, help="runs of each selection (median)")
    parser.add_argument("--years", type=int, default=RULE.years, help="retention period")
    args = parser.parse_args()
    console = Console(width=120)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    table = Table(
        title=f"retention selection, {args.studies} studies, {args.years}-year rule, median of "
        f"{args.repeat} runs "
        "(one process, wall time; bounded by the database)",
        width=116,
    )
    for column in ("backend", "selection", "ms per run", "studies examined/s", "due, unheld"):
        table.add_column(column, justify="left" if column in ("backend", "selection") else "right")
    for backend in backends:
        for row in bench(backend, args, console):
            table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
