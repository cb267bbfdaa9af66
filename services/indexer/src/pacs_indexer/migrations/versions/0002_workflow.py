"""workflow: worklist, MPPS, applied HL7 messages, SR measurements

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 15:56:03.511270
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Byte-wise string comparison on PostgreSQL, as SQLite's BINARY (see pacs_indexer.schema).
BYTEWISE = sa.String().with_variant(sa.VARCHAR(collation="C"), "postgresql")

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "applied_messages",
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("sender", BYTEWISE, nullable=False),
        sa.Column("control_id", BYTEWISE, nullable=False),
        sa.Column("subject", BYTEWISE, nullable=False),
        sa.Column("applied_time", BYTEWISE, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "sender", "control_id", "subject"),
    )
    op.create_table(
        "performed_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("sop_instance_uid", BYTEWISE, nullable=False),
        sa.Column("status", BYTEWISE, nullable=False),
        sa.Column("updated_time", BYTEWISE, nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "sop_instance_uid", name="uq_performed_steps_uid"),
    )
    op.create_table(
        "scheduled_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("order_number", BYTEWISE, nullable=False),
        sa.Column("step_id", BYTEWISE, nullable=False),
        sa.Column("accession_number", BYTEWISE, nullable=False),
        sa.Column("requested_procedure_id", BYTEWISE, nullable=False),
        sa.Column("study_instance_uid", BYTEWISE, nullable=False),
        sa.Column("modality", BYTEWISE, nullable=False),
        sa.Column("station_ae_title", BYTEWISE, nullable=False),
        sa.Column("start_date", BYTEWISE, nullable=False),
        sa.Column("start_time", BYTEWISE, nullable=False),
        sa.Column("start_time_norm", BYTEWISE, nullable=False),
        sa.Column("start_datetime_norm", BYTEWISE, nullable=False),
        sa.Column("performing_physician", BYTEWISE, nullable=False),
        sa.Column("performing_physician_folded", BYTEWISE, nullable=False),
        sa.Column("patient_id", BYTEWISE, nullable=False),
        sa.Column("issuer_of_patient_id", BYTEWISE, nullable=False),
        sa.Column("patient_name", BYTEWISE, nullable=False),
        sa.Column("patient_name_folded", BYTEWISE, nullable=False),
        sa.Column("patient_birth_date", BYTEWISE, nullable=False),
        sa.Column("patient_sex", BYTEWISE, nullable=False),
        sa.Column("status", BYTEWISE, nullable=False),
        sa.Column("updated_time", BYTEWISE, nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "order_number", "step_id", name="uq_scheduled_steps_order"),
    )
    with op.batch_alter_table("scheduled_steps", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scheduled_steps_accession", ["tenant", "accession_number"], unique=False
        )
        batch_op.create_index(
            "ix_scheduled_steps_modality",
            ["tenant", "modality", "start_datetime_norm"],
            unique=False,
        )
        batch_op.create_index("ix_scheduled_steps_patient", ["tenant", "patient_id"], unique=False)
        batch_op.create_index(
            "ix_scheduled_steps_start", ["tenant", "start_datetime_norm"], unique=False
        )
        batch_op.create_index(
            "ix_scheduled_steps_station",
            ["tenant", "station_ae_title", "start_datetime_norm"],
            unique=False,
        )

    op.create_table(
        "sr_measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("sop_instance_uid", BYTEWISE, nullable=False),
        sa.Column("series_instance_uid", BYTEWISE, nullable=False),
        sa.Column("study_instance_uid", BYTEWISE, nullable=False),
        sa.Column("sop_class_uid", BYTEWISE, nullable=False),
        sa.Column("patient_id", BYTEWISE, nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("concept_code_value", BYTEWISE, nullable=False),
        sa.Column("concept_code_scheme", BYTEWISE, nullable=False),
        sa.Column("concept_code_meaning", BYTEWISE, nullable=False),
        sa.Column("value", BYTEWISE, nullable=False),
        sa.Column("units_code_value", BYTEWISE, nullable=False),
        sa.Column("units_code_meaning", BYTEWISE, nullable=False),
        sa.Column("finding_site", BYTEWISE, nullable=False),
        sa.Column("tracking_identifier", BYTEWISE, nullable=False),
        sa.Column("referenced_sop_instance_uids", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sr_measurements", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sr_measurements_concept", ["tenant", "concept_code_value"], unique=False
        )
        batch_op.create_index("ix_sr_measurements_patient", ["tenant", "patient_id"], unique=False)
        batch_op.create_index(
            "ix_sr_measurements_report", ["tenant", "sop_instance_uid"], unique=False
        )
        batch_op.create_index(
            "ix_sr_measurements_study", ["tenant", "study_instance_uid"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("sr_measurements", schema=None) as batch_op:
        batch_op.drop_index("ix_sr_measurements_study")
        batch_op.drop_index("ix_sr_measurements_report")
        batch_op.drop_index("ix_sr_measurements_patient")
        batch_op.drop_index("ix_sr_measurements_concept")

    op.drop_table("sr_measurements")
    with op.batch_alter_table("scheduled_steps", schema=None) as batch_op:
        batch_op.drop_index("ix_scheduled_steps_station")
        batch_op.drop_index("ix_scheduled_steps_start")
        batch_op.drop_index("ix_scheduled_steps_patient")
        batch_op.drop_index("ix_scheduled_steps_modality")
        batch_op.drop_index("ix_scheduled_steps_accession")

    op.drop_table("scheduled_steps")
    op.drop_table("performed_steps")
    op.drop_table("applied_messages")
