"""Alembic migrations produce exactly the schema the code declares, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pacs_indexer.database import Database
from pacs_indexer.schema import Base
from sqlalchemy import inspect


def test_migrated_schema_matches_the_models(fresh_database: Database) -> None:
    database = fresh_database
    database.migrate()
    database.migrate()  # a second run finds the schema current and changes nothing
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert context.get_current_revision() is not None


def test_downgrade_to_nothing_and_back(fresh_database: Database) -> None:
    database = fresh_database
    database.migrate()
    database.migrate("base", downgrade=True)
    assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
    database.migrate()
    assert {"patients", "studies", "series", "instances"} <= set(
        inspect(database.engine).get_table_names()
    )
