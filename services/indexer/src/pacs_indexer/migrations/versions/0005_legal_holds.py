"""legal holds: patients and studies that may not be deleted

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 19:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Byte-wise string comparison on PostgreSQL, as SQLite's BINARY (see pacs_indexer.schema).
BYTEWISE = sa.String().with_variant(sa.VARCHAR(collation="C"), "postgresql")

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("level", BYTEWISE, nullable=False),
        sa.Column("subject", BYTEWISE, nullable=False),
        sa.Column("issuer", BYTEWISE, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("set_time", BYTEWISE, nullable=False),
        sa.Column("set_by", BYTEWISE, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "level", "subject", "issuer", name="uq_legal_holds_subject"),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("legal_holds")
