"""rejected_instances: instances hidden by IHE IOCM rejection notes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 19:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Byte-wise string comparison on PostgreSQL, as SQLite's BINARY (see pacs_indexer.schema).
BYTEWISE = sa.String().with_variant(sa.VARCHAR(collation="C"), "postgresql")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "rejected_instances",
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("sop_instance_uid", BYTEWISE, nullable=False),
        sa.Column("study_instance_uid", BYTEWISE, nullable=False),
        sa.Column("series_instance_uid", BYTEWISE, nullable=False),
        sa.Column("sop_class_uid", BYTEWISE, nullable=False),
        sa.Column("patient_id", BYTEWISE, nullable=False),
        sa.Column("reason_code", BYTEWISE, nullable=False),
        sa.Column("note_sop_instance_uid", BYTEWISE, nullable=False),
        sa.Column("rejected_time", BYTEWISE, nullable=False),
        sa.Column("stored_time", BYTEWISE, nullable=False),
        sa.Column("deleted_time", BYTEWISE, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "sop_instance_uid"),
    )
    op.create_index(
        "ix_rejected_instances_note",
        "rejected_instances",
        ["tenant", "note_sop_instance_uid"],
        unique=False,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_rejected_instances_note", table_name="rejected_instances")
    op.drop_table("rejected_instances")
