"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 17:42:36.333236
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Byte-wise string comparison on PostgreSQL, as SQLite's BINARY (see pacs_indexer.schema).
BYTEWISE = sa.String().with_variant(sa.VARCHAR(collation="C"), "postgresql")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "attribute_backfills",
        sa.Column("level", BYTEWISE, nullable=False),
        sa.Column("tag", sa.Integer(), nullable=False),
        sa.Column("completed_time", BYTEWISE, nullable=False),
        sa.PrimaryKeyConstraint("level", "tag"),
    )
    op.create_table(
        "deleted_instances",
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("sop_instance_uid", BYTEWISE, nullable=False),
        sa.Column("deleted_time", BYTEWISE, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "sop_instance_uid"),
    )
    op.create_table(
        "patient_merges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("operation", BYTEWISE, nullable=False),
        sa.Column("source_patient_key", BYTEWISE, nullable=False),
        sa.Column("target_patient_key", BYTEWISE, nullable=False),
        sa.Column("recorded_time", BYTEWISE, nullable=False),
        sa.Column("studies_moved", sa.Integer(), nullable=False),
        sa.Column("previous", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("patient_merges", schema=None) as batch_op:
        batch_op.create_index(
            "ix_patient_merges_source", ["tenant", "source_patient_key"], unique=False
        )

    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("patient_key", BYTEWISE, nullable=False),
        sa.Column("patient_id", BYTEWISE, nullable=False),
        sa.Column("issuer_of_patient_id", BYTEWISE, nullable=False),
        sa.Column("patient_name", BYTEWISE, nullable=False),
        sa.Column("patient_name_folded", BYTEWISE, nullable=False),
        sa.Column("patient_birth_date", BYTEWISE, nullable=False),
        sa.Column("patient_sex", BYTEWISE, nullable=False),
        sa.Column("demographics_locked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "patient_key", name="uq_patients_tenant_key"),
    )
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.create_index("ix_patients_tenant_name", ["tenant", "patient_name"], unique=False)
        batch_op.create_index(
            "ix_patients_tenant_name_folded", ["tenant", "patient_name_folded"], unique=False
        )
        batch_op.create_index(
            "ix_patients_tenant_patient_id", ["tenant", "patient_id"], unique=False
        )

    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", BYTEWISE, nullable=False),
        sa.Column("study_date", BYTEWISE, nullable=False),
        sa.Column("study_time", BYTEWISE, nullable=False),
        sa.Column("study_time_norm", BYTEWISE, nullable=False),
        sa.Column("study_datetime_norm", BYTEWISE, nullable=False),
        sa.Column("accession_number", BYTEWISE, nullable=False),
        sa.Column("study_id", BYTEWISE, nullable=False),
        sa.Column("study_description", BYTEWISE, nullable=False),
        sa.Column("referring_physician_name", BYTEWISE, nullable=False),
        sa.Column("referring_physician_name_folded", BYTEWISE, nullable=False),
        sa.Column("modalities_in_study", BYTEWISE, nullable=False),
        sa.Column("number_of_series", sa.Integer(), nullable=False),
        sa.Column("number_of_instances", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "study_instance_uid", name="uq_studies_tenant_uid"),
    )
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.create_index("ix_studies_patient", ["patient_pk"], unique=False)
        batch_op.create_index(
            "ix_studies_tenant_accession", ["tenant", "accession_number"], unique=False
        )
        batch_op.create_index(
            "ix_studies_tenant_date", ["tenant", "study_date", "study_time_norm"], unique=False
        )
        batch_op.create_index(
            "ix_studies_tenant_datetime", ["tenant", "study_datetime_norm"], unique=False
        )

    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", BYTEWISE, nullable=False),
        sa.Column("modality", BYTEWISE, nullable=False),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", BYTEWISE, nullable=False),
        sa.Column("body_part_examined", BYTEWISE, nullable=False),
        sa.Column("number_of_instances", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["study_pk"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "series_instance_uid", name="uq_series_tenant_uid"),
    )
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index("ix_series_study_modality", ["study_pk", "modality"], unique=False)
        batch_op.create_index("ix_series_tenant_modality", ["tenant", "modality"], unique=False)

    op.create_table(
        "study_attributes",
        sa.Column("owner_pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.Integer(), nullable=False),
        sa.Column("value", BYTEWISE, nullable=False),
        sa.Column("value_key", BYTEWISE, nullable=False),
        sa.ForeignKeyConstraint(["owner_pk"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("study_attributes", schema=None) as batch_op:
        batch_op.create_index("ix_study_attributes_owner", ["owner_pk", "tag"], unique=False)
        batch_op.create_index("ix_study_attributes_tag_key", ["tag", "value_key"], unique=False)

    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", BYTEWISE, nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", BYTEWISE, nullable=False),
        sa.Column("sop_class_uid", BYTEWISE, nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("transfer_syntax_uid", BYTEWISE, nullable=False),
        sa.Column("storage_key", BYTEWISE, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", BYTEWISE, nullable=False),
        sa.Column("version_id", BYTEWISE, nullable=False),
        sa.Column("stored_time", BYTEWISE, nullable=False),
        sa.Column("dicom_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["series_pk"], ["series.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "sop_instance_uid", name="uq_instances_tenant_uid"),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index("ix_instances_series", ["series_pk", "instance_number"], unique=False)

    op.create_table(
        "series_attributes",
        sa.Column("owner_pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.Integer(), nullable=False),
        sa.Column("value", BYTEWISE, nullable=False),
        sa.Column("value_key", BYTEWISE, nullable=False),
        sa.ForeignKeyConstraint(["owner_pk"], ["series.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("series_attributes", schema=None) as batch_op:
        batch_op.create_index("ix_series_attributes_owner", ["owner_pk", "tag"], unique=False)
        batch_op.create_index("ix_series_attributes_tag_key", ["tag", "value_key"], unique=False)

    op.create_table(
        "instance_attributes",
        sa.Column("owner_pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.Integer(), nullable=False),
        sa.Column("value", BYTEWISE, nullable=False),
        sa.Column("value_key", BYTEWISE, nullable=False),
        sa.ForeignKeyConstraint(["owner_pk"], ["instances.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("instance_attributes", schema=None) as batch_op:
        batch_op.create_index("ix_instance_attributes_owner", ["owner_pk", "tag"], unique=False)
        batch_op.create_index("ix_instance_attributes_tag_key", ["tag", "value_key"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("instance_attributes", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_attributes_tag_key")
        batch_op.drop_index("ix_instance_attributes_owner")

    op.drop_table("instance_attributes")
    with op.batch_alter_table("series_attributes", schema=None) as batch_op:
        batch_op.drop_index("ix_series_attributes_tag_key")
        batch_op.drop_index("ix_series_attributes_owner")

    op.drop_table("series_attributes")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index("ix_instances_series")

    op.drop_table("instances")
    with op.batch_alter_table("study_attributes", schema=None) as batch_op:
        batch_op.drop_index("ix_study_attributes_tag_key")
        batch_op.drop_index("ix_study_attributes_owner")

    op.drop_table("study_attributes")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index("ix_series_tenant_modality")
        batch_op.drop_index("ix_series_study_modality")

    op.drop_table("series")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index("ix_studies_tenant_datetime")
        batch_op.drop_index("ix_studies_tenant_date")
        batch_op.drop_index("ix_studies_tenant_accession")
        batch_op.drop_index("ix_studies_patient")

    op.drop_table("studies")
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_index("ix_patients_tenant_patient_id")
        batch_op.drop_index("ix_patients_tenant_name_folded")
        batch_op.drop_index("ix_patients_tenant_name")

    op.drop_table("patients")
    with op.batch_alter_table("patient_merges", schema=None) as batch_op:
        batch_op.drop_index("ix_patient_merges_source")

    op.drop_table("patient_merges")
    op.drop_table("deleted_instances")
    op.drop_table("attribute_backfills")
