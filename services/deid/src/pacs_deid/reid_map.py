"""The optional re-identification map: pseudonym -> original, encrypted at rest, audited.

Rows hold the pseudonym in clear (it is what a researcher has) and the original encrypted with
Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) under a key that lives only in the
service's settings, so a copy of the database alone reveals nothing. SQLite by default,
PostgreSQL through the same SQLAlchemy URL. Writing is idempotent (one row per project and
pseudonym); every read goes through :meth:`ReidentificationMap.lookup`, whose caller announces
it as a ``ReidentificationPerformed`` event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from pacs_common.errors import DataLossError
from pacs_common.sql import make_engine
from sqlalchemy import String, Text, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class _Base(DeclarativeBase):
    pass


class MapRow(_Base):
    """One pseudonym of one project."""

    __tablename__ = "reidentification_map"
    project: Mapped[str] = mapped_column(String(128), primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    original: Mapped[str] = mapped_column(Text, doc="Fernet token of a JSON object")


@dataclass(frozen=True)
class Original:
    """What a pseudonym stands for."""

    kind: str
    value: str
    name: str = ""


class ReidentificationMap:
    """The map in one database, under one encryption key."""

    def __init__(self, url: str, key: bytes) -> None:
        # Bound values (patient data) stay out of database error texts there.
        self.engine: Engine = make_engine(url, sqlite_pragmas=["PRAGMA synchronous=FULL"])
        self.fernet = Fernet(key)

    def create_schema(self) -> None:
        """Create the table when missing."""
        _Base.metadata.create_all(self.engine)

    def record(self, project: str, entries: list[tuple[str, Original]]) -> None:
        """Store pseudonyms (kept when already there: the same key gives the same pseudonym)."""
        if not entries:
            return
        rows = [
            {
                "project": project,
                "pseudonym": pseudonym,
                "kind": original.kind,
                "original": self.fernet.encrypt(
                    json.dumps({"value": original.value, "name": original.name}).encode()
                ).decode(),
            }
            for pseudonym, original in dict(entries).items()
        ]
        insert = (
            postgresql.insert(MapRow)
            if self.engine.dialect.name == "postgresql"
            else sqlite.insert(MapRow)
        )
        with Session(self.engine) as session, session.begin():
            session.execute(insert.values(rows).on_conflict_do_nothing())

    def lookup(self, project: str, pseudonym: str) -> Original | None:
        """The original behind ``pseudonym``; None when the map has no such row."""
        with Session(self.engine) as session:
            row = session.scalars(
                select(MapRow).where(MapRow.project == project, MapRow.pseudonym == pseudonym)
            ).first()
        if row is None:
            return None
        try:
            data = json.loads(self.fernet.decrypt(row.original.encode()))
        except InvalidToken as exc:
            raise DataLossError("re-identification map entry cannot be decrypted") from exc
        return Original(row.kind, data["value"], data.get("name", ""))

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()
