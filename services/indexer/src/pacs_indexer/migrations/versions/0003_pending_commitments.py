"""pending storage commitment requests

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Byte-wise string comparison on PostgreSQL, as SQLite's BINARY (see pacs_indexer.schema).
BYTEWISE = sa.String().with_variant(sa.VARCHAR(collation="C"), "postgresql")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "pending_commitments",
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("transaction_uid", BYTEWISE, nullable=False),
        sa.Column("calling_ae_title", BYTEWISE, nullable=False),
        sa.Column("references", sa.Text(), nullable=False),
        sa.Column("requested_time", BYTEWISE, nullable=False),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.Column("leased_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "transaction_uid"),
    )
    op.create_index(
        op.f("ix_pending_commitments_requested_at"),
        "pending_commitments",
        ["requested_at"],
        unique=False,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f("ix_pending_commitments_requested_at"), table_name="pending_commitments")
    op.drop_table("pending_commitments")
