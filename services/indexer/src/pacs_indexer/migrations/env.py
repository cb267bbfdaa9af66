"""Alembic environment: migrates the connection handed over by
:meth:`pacs_indexer.database.Database.migrate`, or the URL of ``PACS_INDEXER_DATABASE_URL``
when run from the ``alembic`` command line (``cd services/indexer && alembic revision
--autogenerate -m "…"``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from pacs_indexer.schema import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    """Run the migrations online (the only mode the indexer uses)."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from pacs_indexer.database import make_engine  # noqa: PLC0415  (command line only)
    from pacs_indexer.settings import IndexerSettings  # noqa: PLC0415

    engine = make_engine(IndexerSettings.load().database_url)
    with engine.connect() as fresh:
        _run(fresh)
    engine.dispose()


main()
