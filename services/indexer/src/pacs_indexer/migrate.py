"""``pacs-indexer migrate``: bring the index database to this release's schema, then exit.

Deployed, this is the Helm pre-install/pre-upgrade hook Job (``charts/cloudpacs``,
``indexer-migrate``): it runs with the new image before any pod of the new release starts, so
that the indexer pods never migrate, never race each other, and only check the revision
(``PACS_INDEXER_MIGRATE_ON_START=false``, :meth:`pacs_indexer.database.Database.check_schema`).
Locally the indexer still migrates at start-up. Running it twice is harmless (alembic finds
the schema current); on PostgreSQL an advisory lock serialises concurrent runs.

Exit status: 0 migrated or already current, 1 the database is unreachable or a migration
failed (the hook Job then retries, and Helm stops the upgrade before any pod changes), 2 usage.
"""

from __future__ import annotations

import argparse
import logging

from alembic.util import CommandError
from pacs_common.errors import PacsError
from pacs_common.logging import configure_logging
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pacs_indexer.database import Database, head_revision
from pacs_indexer.settings import IndexerSettings

log = logging.getLogger(__name__)


class MigrationSettings(BaseSettings):
    """The few indexer settings a migration reads (the same ``PACS_INDEXER_*`` variables): the
    hook Job gets only these, not Kafka's or storage's, which the full
    :class:`~pacs_indexer.settings.IndexerSettings` would require."""

    model_config = SettingsConfigDict(env_prefix="PACS_INDEXER_", extra="ignore")

    database_url: str = IndexerSettings.model_fields["database_url"].default
    log_level: str = "INFO"
    log_patient_data: bool = Field(False, description="never needed: no patient data is read")


def main(argv: list[str]) -> int:
    """Run the migration with the indexer's own settings (``PACS_INDEXER_DATABASE_URL``)."""
    parser = argparse.ArgumentParser(
        prog="pacs-indexer migrate", description="Migrate the index database to this release."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing: exit 1 unless the schema is current (or newer)",
    )
    args = parser.parse_args(argv)
    try:
        settings = MigrationSettings()
    except ValidationError as exc:
        raise SystemExit(f"invalid PACS_INDEXER_* settings: {exc}") from exc
    configure_logging("indexer", settings.log_level, settings.log_patient_data)
    database = Database(settings.database_url)
    try:
        before = database.revision()
        if args.check:
            database.check_schema()
            log.info("index schema is current", extra={"revision": before})
            return 0
        database.migrate()
        log.info(
            "index schema migrated", extra={"from_revision": before, "revision": head_revision()}
        )
        return 0
    except PacsError as exc:
        log.error("index schema migration failed", extra={"error": exc.message})
        return 1
    except CommandError as exc:
        # For example a revision this release does not know: a newer release migrated it.
        log.error("index schema migration refused", extra={"error": str(exc)})
        return 1
    finally:
        database.dispose()
