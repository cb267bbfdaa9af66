"""The audit trail: append-only records in SQL, each committing to the one before (a hash chain).

Every record stores the event exactly as it arrived (the serialized ``AuditEvent``, never
re-encoded) and ``hash = SHA-256(previous hash || payload)``; the first record's previous hash
is 32 zero bytes. The searchable columns (tenant, patient, studies, actors, time, type) are
copies of fields of the payload, so :mod:`pacs_audit.verify` also checks that they still say
what the payload says. Where the chain ends is kept in a one-row ``audit_head`` table, locked
for the append (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer at a time), so
two audit service replicas extend one chain, never fork it.

Appending is idempotent on the event id: a redelivered event (Kafka at-least-once, or the
emitter's retry) is stored once. Each appended record also gets a row in ``audit_outbox``, in
the same transaction, which is the durable queue of the syslog export
(:mod:`pacs_audit.exporter`).

Nothing here updates or deletes a record; the database role of a deployment should not be
allowed to either (``docs/audit.md``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_common import sql
from pacs_common.errors import InvalidArgumentError, UnavailableError
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

GENESIS = bytes(32)
"""The previous hash of the first record."""

metadata = MetaData()
records = Table(
    "audit_records",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("event_type", Integer, nullable=False),
    Column("event_time", String(40), nullable=False, index=True),
    Column("patient_id", String(128), nullable=False, index=True),
    Column("studies", Text, nullable=False),
    Column("actors", Text, nullable=False),
    Column("recorded_time", String(40), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)
head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)
checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("signed_time", String(40), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
)
outbox = Table(
    "audit_outbox",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("attempts", Integer, nullable=False, default=0),
)


def chain_hash(prev_hash: bytes, payload: bytes) -> bytes:
    """The hash a record commits to: SHA-256 of the previous record's hash and its payload."""
    return hashlib.sha256(prev_hash + payload).digest()


def now_rfc3339() -> str:
    """Current UTC time, RFC 3339 with microseconds (sortable as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _joined(values: Sequence[str]) -> str:
    """Values stored as ``|a|b|`` so that ``LIKE '%|a|%'`` finds one exactly."""
    return "|" + "|".join(v.replace("|", "/") for v in values if v) + "|"


def actor_names(event: audit_pb.AuditEvent) -> list[str]:
    """Every name an actor of ``event`` can be searched by."""
    names: list[str] = []
    for actor in event.actors:
        for value in (actor.user_id, actor.ae_title, actor.token_subject, actor.network_address):
            if value and value not in names:
                names.append(value)
    return names


def columns_of(event: audit_pb.AuditEvent) -> dict[str, Any]:
    """The searchable columns of a record, as copies of its event's fields."""
    return {
        "event_id": event.id,
        "tenant": event.tenant,
        "event_type": int(event.event_type),
        "event_time": event.event_time,
        "patient_id": event.patient_id,
        "studies": _joined(list(event.study_instance_uids)),
        "actors": _joined(actor_names(event)),
    }


@dataclass(frozen=True)
class StoredRecord:
    """One record as stored."""

    seq: int
    event: audit_pb.AuditEvent
    hash: bytes
    recorded_time: str


def make_engine(url: str) -> Engine:
    """The trail's engine (see :func:`pacs_common.sql.make_engine`)."""
    return sql.make_engine(
        url,
        # FULL: an acknowledged audit record survives a power loss, not only a crash.
        sqlite_pragmas=["PRAGMA synchronous=FULL"],
        postgres_options={"pool_size": 5},
    )


class Trail:
    """The audit trail in one database."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    def create_schema(self) -> None:
        """Create the tables (idempotent)."""
        with self._begin() as conn:
            metadata.create_all(conn)
            # The head row exists before the first append, which then only has to lock it.
            if conn.execute(select(head.c.id).where(head.c.id == 1)).first() is None:
                conn.execute(insert(head).values(id=1, seq=0, hash=GENESIS))

    def dispose(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise UnavailableError(f"audit database unavailable: {exc.orig!r}") from exc

    def append(self, events: Sequence[audit_pb.AuditEvent]) -> int:
        """Append events not stored yet, in order, in one transaction; return how many.

        Raises:
            InvalidArgumentError: an event without an id (it could not be deduplicated).
            UnavailableError: the database is unreachable (retry: nothing was stored).
        """
        for item in events:
            if not item.id:
                raise InvalidArgumentError("audit event without an id")
        with self._begin() as conn:
            seen = set(
                conn.execute(
                    select(records.c.event_id).where(
                        records.c.event_id.in_([item.id for item in events])
                    )
                ).scalars()
            )
            fresh: list[audit_pb.AuditEvent] = []
            for item in events:
                if item.id not in seen:
                    seen.add(item.id)
                    fresh.append(item)
            if not fresh:
                return 0
            seq, prev = self._head_for_update(conn)
            recorded = now_rfc3339()
            rows = []
            for item in fresh:
                payload = item.SerializeToString()
                seq += 1
                digest = chain_hash(prev, payload)
                rows.append(
                    {
                        "seq": seq,
                        **columns_of(item),
                        "recorded_time": recorded,
                        "payload": payload,
                        "prev_hash": prev,
                        "hash": digest,
                    }
                )
                prev = digest
            conn.execute(insert(records), rows)
            conn.execute(insert(outbox), [{"seq": row["seq"], "attempts": 0} for row in rows])
            conn.execute(update(head).where(head.c.id == 1).values(seq=seq, hash=prev))
            return len(rows)

    def _head_for_update(self, conn: Connection) -> tuple[int, bytes]:
        row = conn.execute(select(head.c.seq, head.c.hash).where(head.c.id == 1).with_for_update())
        found = row.first()
        if found is None:
            conn.execute(insert(head).values(id=1, seq=0, hash=GENESIS))
            return 0, GENESIS
        return int(found.seq), bytes(found.hash)

    def head(self) -> tuple[int, bytes]:
        """The last record's sequence number and hash ((0, GENESIS) when empty)."""
        with self._begin() as conn:
            found = conn.execute(select(head.c.seq, head.c.hash).where(head.c.id == 1)).first()
        return (int(found.seq), bytes(found.hash)) if found else (0, GENESIS)

    def query(
        self,
        *,
        tenants: Sequence[str] | None,
        patient_id: str = "",
        study_instance_uid: str = "",
        actor: str = "",
        event_type: int = 0,
        since: str = "",
        until: str = "",
        limit: int = 1000,
    ) -> list[StoredRecord]:
        """Records matching every filter given, oldest first (``tenants`` None: every tenant)."""
        statement = select(
            records.c.seq, records.c.payload, records.c.hash, records.c.recorded_time
        )
        if tenants is not None:
            statement = statement.where(records.c.tenant.in_(list(tenants)))
        if patient_id:
            statement = statement.where(records.c.patient_id == patient_id)
        if study_instance_uid:
            statement = statement.where(records.c.studies.like(f"%|{study_instance_uid}|%"))
        if actor:
            statement = statement.where(records.c.actors.like(f"%|{actor}|%"))
        if event_type:
            statement = statement.where(records.c.event_type == event_type)
        if since:
            statement = statement.where(records.c.event_time >= since)
        if until:
            statement = statement.where(records.c.event_time < until)
        statement = statement.order_by(records.c.seq).limit(limit)
        with self._begin() as conn:
            rows = conn.execute(statement).all()
        return [
            StoredRecord(
                int(row.seq),
                audit_pb.AuditEvent.FromString(bytes(row.payload)),
                bytes(row.hash),
                row.recorded_time,
            )
            for row in rows
        ]

    def connection(self) -> Any:
        """A transaction for modules that read the raw tables (verify, export, checkpoints)."""
        return self._begin()
