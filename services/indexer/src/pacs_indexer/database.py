"""Connection to the index database: SQLite (one machine) or PostgreSQL (deployment).

Both are reached through SQLAlchemy with the same schema and the same queries. SQLite gets the
pragmas that make it behave like the server database where it matters: write-ahead logging (a
reader never blocks the writer), enforced foreign keys, a busy timeout instead of immediate
"database is locked" errors, and case-sensitive LIKE (PS3.4 C.2.2.2.4 wildcard matching is
case-sensitive, as PostgreSQL's LIKE is).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from pacs_common import sql
from pacs_common.errors import FailedPreconditionError, UnavailableError
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK = 0x7061_6373_6964_78  # "pacsidx": the advisory lock key of index migrations


def make_engine(url: str) -> Engine:
    """The index's engine (see :func:`pacs_common.sql.make_engine`)."""
    return sql.make_engine(
        url,
        sqlite_pragmas=["PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON"],
        # No server-side prepared statements: psycopg prepares a statement after a few runs,
        # and PostgreSQL may then keep a generic plan made while a table was still small (a
        # sequential scan) long after the table grew. Planning these short queries costs well
        # under 1 ms.
        postgres_options={
            "pool_size": 5,
            "max_overflow": 5,
            "connect_args": {"prepare_threshold": None},
        },
    )


class Database:
    """The engine and session factory of the index."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def create_schema(self) -> None:
        """Bring the schema to the latest migration (idempotent; see :meth:`migrate`)."""
        self.migrate()

    def migrate(self, revision: str = "head", downgrade: bool = False) -> None:
        """Run the Alembic migrations up (or down) to ``revision``.

        On PostgreSQL an advisory lock serialises replicas that start at the same time, so
        only one of them migrates and the others find the schema current.
        """
        config = _alembic_config()
        with translate_errors(), self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
            config.attributes["connection"] = connection
            if downgrade:
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)

    def revision(self) -> str | None:
        """The migration revision the database is at (None: no schema yet)."""
        with translate_errors(), self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def check_schema(self) -> str:
        """Check that the schema is the one this code needs, without changing it; return
        the database's revision.

        A database at an older revision (or without a schema) must be migrated first: the
        Helm pre-upgrade hook does it (``pacs-indexer migrate``). A database at a revision
        this code does not know was migrated by a newer release: it is accepted, because every
        migration keeps the previous release working (docs/operations.md, "Upgrades"), which is
        what lets a newer release be rolled back without downgrading the schema.

        Raises:
            FailedPreconditionError: the schema is missing or older than this code's.
            UnavailableError: the database cannot be reached.
        """
        current = self.revision()
        head = head_revision()
        if current == head:
            return current
        if current is None:
            raise FailedPreconditionError(
                f"the index database has no schema; run `pacs-indexer migrate` (to {head})"
            )
        try:
            ScriptDirectory.from_config(_alembic_config()).get_revision(current)
        except CommandError:
            log.warning(
                "index schema is newer than this indexer's (rolled back?)",
                extra={"revision": current, "head": head},
            )
            return current
        raise FailedPreconditionError(
            f"the index database is at revision {current}, this indexer needs {head}; "
            "run `pacs-indexer migrate` (the chart's pre-upgrade hook does)"
        )

    def refresh_statistics(self) -> None:
        """Refresh the planner's statistics where the database does not do it by itself.

        SQLite plans joins well only with ``ANALYZE`` statistics; with ``analysis_limit`` each
        index is sampled, so this stays fast on a large index. PostgreSQL's autovacuum keeps
        its own statistics current.
        """
        if self.dialect != "sqlite":
            return
        with translate_errors(), self.engine.begin() as connection:
            connection.execute(text("PRAGMA analysis_limit=1000"))
            connection.execute(text("ANALYZE"))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        Raises:
            UnavailableError: the database cannot be reached (callers may retry).
        """
        with translate_errors(), self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest migration revision of this code."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "the indexer has migrations"
    return head


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn "database unreachable" into the retriable :class:`UnavailableError`."""
    try:
        yield
    except OperationalError as exc:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise UnavailableError("index database connection lost") from exc
        raise UnavailableError(f"index database unavailable: {exc.orig!r}") from exc
