"""The index tables: patients, studies, series and instances of each tenant, keyed by UID.

The DICOM information model (PS3.3 A.1.2, PS3.4 C.6.2 Study Root) is one patient with many
studies, a study with many series, a series with many instances. Every row carries its tenant
and every unique key starts with the tenant, so no query can cross tenants by accident.

Values are stored as received (trimmed), with ``''`` for an absent or empty attribute so that
matching and ordering behave the same on SQLite and PostgreSQL. A few derived columns make
matching fast and backend-independent: ``*_folded`` (casefolded person names, for
case-insensitive matching) and ``*_norm`` (times padded to ``HHMMSS.FFFFFF`` so that string
comparison orders them, for range matching).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import VARCHAR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Strings compare byte by byte on both backends: PostgreSQL's "C" collation is SQLite's BINARY.
# Results are then ordered the same everywhere, and PostgreSQL can use plain btree indexes for
# prefix wildcard matching (LIKE 'DOE%'), which it cannot under a linguistic collation.
BYTEWISE = String().with_variant(VARCHAR(collation="C"), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of the index tables."""


class Patient(Base):
    """One patient of a tenant (PS3.3 C.7.1.1 Patient Module)."""

    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("tenant", "patient_key", name="uq_patients_tenant_key"),
        Index("ix_patients_tenant_patient_id", "tenant", "patient_id"),
        Index("ix_patients_tenant_name", "tenant", "patient_name"),
        Index("ix_patients_tenant_name_folded", "tenant", "patient_name_folded"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(BYTEWISE)
    # PatientID + IssuerOfPatientID when there is an ID; otherwise name and birth date, so that
    # anonymous patients without IDs are not all folded into one row.
    patient_key: Mapped[str] = mapped_column(BYTEWISE)
    patient_id: Mapped[str] = mapped_column(BYTEWISE, default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(BYTEWISE, default="")
    patient_name: Mapped[str] = mapped_column(BYTEWISE, default="")
    patient_name_folded: Mapped[str] = mapped_column(BYTEWISE, default="")
    patient_birth_date: Mapped[str] = mapped_column(BYTEWISE, default="")
    patient_sex: Mapped[str] = mapped_column(BYTEWISE, default="")
    # Set when demographics came from the patient registry (HL7 update): images carrying older
    # values no longer overwrite them.
    demographics_locked: Mapped[bool] = mapped_column(Boolean, default=False)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    """One study (PS3.3 C.7.2.1 General Study Module) with its computed attributes."""

    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("tenant", "study_instance_uid", name="uq_studies_tenant_uid"),
        Index("ix_studies_tenant_date", "tenant", "study_date", "study_time_norm"),
        Index("ix_studies_tenant_datetime", "tenant", "study_datetime_norm"),
        Index("ix_studies_tenant_accession", "tenant", "accession_number"),
        Index("ix_studies_patient", "patient_pk"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(BYTEWISE)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    study_instance_uid: Mapped[str] = mapped_column(BYTEWISE)
    study_date: Mapped[str] = mapped_column(BYTEWISE, default="")
    study_time: Mapped[str] = mapped_column(BYTEWISE, default="")
    study_time_norm: Mapped[str] = mapped_column(BYTEWISE, default="")
    study_datetime_norm: Mapped[str] = mapped_column(BYTEWISE, default="")
    accession_number: Mapped[str] = mapped_column(BYTEWISE, default="")
    study_id: Mapped[str] = mapped_column(BYTEWISE, default="")
    study_description: Mapped[str] = mapped_column(BYTEWISE, default="")
    referring_physician_name: Mapped[str] = mapped_column(BYTEWISE, default="")
    referring_physician_name_folded: Mapped[str] = mapped_column(BYTEWISE, default="")
    # Computed from the series (PS3.4 C.6.2.1.2): backslash-separated distinct modalities.
    modalities_in_study: Mapped[str] = mapped_column(BYTEWISE, default="")
    number_of_series: Mapped[int] = mapped_column(Integer, default=0)
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    """One series (PS3.3 C.7.3.1 General Series Module)."""

    __tablename__ = "series"
    __table_args__ = (
        UniqueConstraint("tenant", "series_instance_uid", name="uq_series_tenant_uid"),
        Index("ix_series_study_modality", "study_pk", "modality"),
        Index("ix_series_tenant_modality", "tenant", "modality"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(BYTEWISE)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    series_instance_uid: Mapped[str] = mapped_column(BYTEWISE)
    modality: Mapped[str] = mapped_column(BYTEWISE, default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(BYTEWISE, default="")
    body_part_examined: Mapped[str] = mapped_column(BYTEWISE, default="")
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    """One composite SOP instance and where its current stored object is."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("tenant", "sop_instance_uid", name="uq_instances_tenant_uid"),
        Index("ix_instances_series", "series_pk", "instance_number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(BYTEWISE)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(BYTEWISE)
    sop_class_uid: Mapped[str] = mapped_column(BYTEWISE, default="")
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(BYTEWISE, default="")
    storage_key: Mapped[str] = mapped_column(BYTEWISE, default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(BYTEWISE, default="")
    version_id: Mapped[str] = mapped_column(BYTEWISE, default="")
    # RFC 3339 UTC with microseconds, so that string order is time order (newest version wins).
    stored_time: Mapped[str] = mapped_column(BYTEWISE, default="")
    # The header as DICOM JSON (PS3.18 F.2) without bulk data.
    dicom_json: Mapped[str] = mapped_column(Text, default="{}")

    series: Mapped[Series] = relationship(back_populates="instances")


class DeletedInstance(Base):
    """A tombstone: an instance removed at ``deleted_time``. A store event older than that,
    delivered late, must not bring the instance back."""

    __tablename__ = "deleted_instances"

    tenant: Mapped[str] = mapped_column(BYTEWISE, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(BYTEWISE, primary_key=True)
    deleted_time: Mapped[str] = mapped_column(BYTEWISE, default="")


class RejectedInstance(Base):
    """An instance rejected by an IHE IOCM rejection note (a Key Object Selection titled with
    a code of PS3.16 CID 7011), hidden from every query and retrieve: it is kept out of the
    instance table whether it arrives before or after its note (``pacs_indexer.rejection``).

    ``stored_time`` is when an object of it was last seen stored ('' while it has not
    arrived); ``deleted_time`` when the deletion policy last removed it from storage
    (``pacs_indexer.rejected_deletion``)."""

    __tablename__ = "rejected_instances"
    __table_args__ = (Index("ix_rejected_instances_note", "tenant", "note_sop_instance_uid"),)

    tenant: Mapped[str] = mapped_column(BYTEWISE, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(BYTEWISE, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(BYTEWISE, default="")
    series_instance_uid: Mapped[str] = mapped_column(BYTEWISE, default="")
    sop_class_uid: Mapped[str] = mapped_column(BYTEWISE, default="")
    patient_id: Mapped[str] = mapped_column(BYTEWISE, default="")
    # The rejection note's document title (DCM code value: 113001, 113037, 113038, 113039).
    reason_code: Mapped[str] = mapped_column(BYTEWISE, default="")
    note_sop_instance_uid: Mapped[str] = mapped_column(BYTEWISE, default="")
    # RFC 3339 UTC with microseconds (string order is time order), as Instance.stored_time.
    rejected_time: Mapped[str] = mapped_column(BYTEWISE, default="")
    stored_time: Mapped[str] = mapped_column(BYTEWISE, default="")
    deleted_time: Mapped[str] = mapped_column(BYTEWISE, default="")


class _ExtraAttribute:
    """Shape of the operator-configured searchable attributes of one level: one row per value
    (multi-valued attributes match on any value)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[int] = mapped_column(Integer)
    value: Mapped[str] = mapped_column(BYTEWISE, default="")
    # What matching compares: the value, case-folded for PN, normalised for TM.
    value_key: Mapped[str] = mapped_column(BYTEWISE, default="")


class StudyAttribute(_ExtraAttribute, Base):
    """A configured PATIENT or STUDY level attribute of a study."""

    __tablename__ = "study_attributes"
    __table_args__ = (
        Index("ix_study_attributes_owner", "owner_pk", "tag"),
        Index("ix_study_attributes_tag_key", "tag", "value_key"),
    )

    owner_pk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))


class SeriesAttribute(_ExtraAttribute, Base):
    """A configured SERIES level attribute of a series."""

    __tablename__ = "series_attributes"
    __table_args__ = (
        Index("ix_series_attributes_owner", "owner_pk", "tag"),
        Index("ix_series_attributes_tag_key", "tag", "value_key"),
    )

    owner_pk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))


class InstanceAttribute(_ExtraAttribute, Base):
    """A configured IMAGE level attribute of an instance."""

    __tablename__ = "instance_attributes"
    __table_args__ = (
        Index("ix_instance_attributes_owner", "owner_pk", "tag"),
        Index("ix_instance_attributes_tag_key", "tag", "value_key"),
    )

    owner_pk: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))


class AttributeBackfill(Base):
    """Which configured attributes have been filled in for the instances indexed before they
    were configured."""

    __tablename__ = "attribute_backfills"

    level: Mapped[str] = mapped_column(BYTEWISE, primary_key=True)
    tag: Mapped[int] = mapped_column(Integer, primary_key=True)
    completed_time: Mapped[str] = mapped_column(BYTEWISE, default="")


class PatientMerge(Base):
    """History of patient merges and updates applied to the index (from HL7 ADT A40/A08)."""

    __tablename__ = "patient_merges"
    __table_args__ = (Index("ix_patient_merges_source", "tenant", "source_patient_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(BYTEWISE)
    operation: Mapped[str] = mapped_column(BYTEWISE)  # "merge" or "update"
    source_patient_key: Mapped[str] = mapped_column(BYTEWISE)
    target_patient_key: Mapped[str] = mapped_column(BYTEWISE)
    recorded_time: Mapped[str] = mapped_column(BYTEWISE)
    studies_moved: Mapped[int] = mapped_column(Integer, default=0)
    # The demographics before the operation, as JSON, so that it can be audited and undone.
    previous: Mapped[str] = mapped_column(Text, default="{}")


class ScheduledStep(Base):
    """One scheduled procedure step of a tenant: a Modality Worklist item (PS3.4 K.6), placed
    by an HL7 order (ORM^O01 / OMI^O23) and progressed by MPPS (PS3.4 F.7)."""

    __tablename__ = "scheduled_steps"
    __table_args__ = (
        UniqueConstraint("tenant", "order_number", "step_id", name="uq_scheduled_steps_order"),
        Index("ix_scheduled_steps_station", "tenant", "station_ae_title", "start_datetime_norm"),
        Index("ix_scheduled_steps_modality", "tenant", "modality", "start_datetime_norm"),
        Index("ix_scheduled_steps_start", "tenant", "start_datetime_norm"),
        Index("ix_scheduled_steps_accession", "tenant", "accession_number"),
        Index("ix_scheduled_steps_patient", "tenant", "patient_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(BYTEWISE)
    order_number: Mapped[str] = mapped_column(BYTEWISE)
    step_id: Mapped[str] = mapped_column(BYTEWISE)
    accession_number: Mapped[str] = mapped_column(BYTEWISE, default="")
    requested_procedure_id: Mapped[str] = mapped_column(BYTEWISE, default="")
    study_instance_uid: Mapped[str] = mapped_column(BYTEWISE, default="")
    modality: Mapped[str] = mapped_column(BYTEWISE, default="")
    station_ae_title: Mapped[str] = mapped_column(BYTEWISE, default="")
    start_date: Mapped[str] = mapped_column(BYTEWISE, default="")
    start_time: Mapped[str] = mapped_column(BYTEWISE, default="")
    start_time_norm: Mapped[str] = mapped_column(BYTEWISE, default="")
    start_datetime_norm: Mapped[str] = mapped_column(BYTEWISE, default="")
    performing_physician: Mapped[str] = mapped_column(BYTEWISE, default="")
    performing_physician_folded: Mapped[str] = mapped_column(BYTEWISE, default="")
    patient_id: Mapped[str] = mapped_column(BYTEWISE, default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(BYTEWISE, default="")
    patient_name: Mapped[str] = mapped_column(BYTEWISE, default="")
    patient_name_folded: Mapped[str] = mapped_column(BYTEWISE, default="")
    patient_birth_date: Mapped[str] = mapped_column(BYTEWISE, default="")
    patient_sex: Mapped[str] = mapped_column(BYTEWISE, default="")
    # SCHEDULED, STARTED (MPPS IN PROGRESS), COMPLETED, DISCONTINUED, CANCELLED
    status: Mapped[str] = mapped_column(BYTEWISE, default="SCHEDULED")
    updated_time: Mapped[str] = mapped_column(BYTEWISE, default="")
    # The other K.6 attributes (procedure codes, physicians) as DICOM JSON.
    details: Mapped[str] = mapped_column(Text, default="{}")


class PerformedStep(Base):
    """One Modality Performed Procedure Step (PS3.4 F.7) as the modality last set it."""

    __tablename__ = "performed_steps"
    __table_args__ = (
        UniqueConstraint("tenant", "sop_instance_uid", name="uq_performed_steps_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(BYTEWISE)
    sop_instance_uid: Mapped[str] = mapped_column(BYTEWISE)
    status: Mapped[str] = mapped_column(BYTEWISE, default="IN PROGRESS")
    updated_time: Mapped[str] = mapped_column(BYTEWISE, default="")
    # The attributes of the N-CREATE with every N-SET applied, as DICOM JSON.
    dataset: Mapped[str] = mapped_column(Text, default="{}")


class AppliedMessage(Base):
    """An HL7 message's effect on one subject (patient or order step) already applied, so
    that a resent or redelivered message (same sender and control ID) changes nothing."""

    __tablename__ = "applied_messages"

    tenant: Mapped[str] = mapped_column(BYTEWISE, primary_key=True)
    sender: Mapped[str] = mapped_column(BYTEWISE, primary_key=True)
    control_id: Mapped[str] = mapped_column(BYTEWISE, primary_key=True)
    subject: Mapped[str] = mapped_column(BYTEWISE, primary_key=True)
    applied_time: Mapped[str] = mapped_column(BYTEWISE, default="")


class SrMeasurement(Base):
    """One numeric measurement of an indexed structured report (TID 1500 and any NUM item)."""

    __tablename__ = "sr_measurements"
    __table_args__ = (
        Index("ix_sr_measurements_report", "tenant", "sop_instance_uid"),
        Index("ix_sr_measurements_study", "tenant", "study_instance_uid"),
        Index("ix_sr_measurements_patient", "tenant", "patient_id"),
        Index("ix_sr_measurements_concept", "tenant", "concept_code_value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(BYTEWISE)
    sop_instance_uid: Mapped[str] = mapped_column(BYTEWISE)
    series_instance_uid: Mapped[str] = mapped_column(BYTEWISE, default="")
    study_instance_uid: Mapped[str] = mapped_column(BYTEWISE, default="")
    sop_class_uid: Mapped[str] = mapped_column(BYTEWISE, default="")
    patient_id: Mapped[str] = mapped_column(BYTEWISE, default="")
    ordinal: Mapped[int] = mapped_column(Integer, default=0)
    concept_code_value: Mapped[str] = mapped_column(BYTEWISE, default="")
    concept_code_scheme: Mapped[str] = mapped_column(BYTEWISE, default="")
    concept_code_meaning: Mapped[str] = mapped_column(BYTEWISE, default="")
    value: Mapped[str] = mapped_column(BYTEWISE, default="")
    units_code_value: Mapped[str] = mapped_column(BYTEWISE, default="")
    units_code_meaning: Mapped[str] = mapped_column(BYTEWISE, default="")
    finding_site: Mapped[str] = mapped_column(BYTEWISE, default="")
    tracking_identifier: Mapped[str] = mapped_column(BYTEWISE, default="")
    referenced_sop_instance_uids: Mapped[str] = mapped_column(Text, default="")


class PendingCommitment(Base):
    """A Storage Commitment request (PS3.4 J.3.2) whose N-EVENT-REPORT has not been sent yet:
    kept here, not in the gateway process, so that a restart between the N-ACTION and the
    report loses no request (see ``pacs_indexer.commitments``)."""

    __tablename__ = "pending_commitments"

    tenant: Mapped[str] = mapped_column(BYTEWISE, primary_key=True)
    transaction_uid: Mapped[str] = mapped_column(BYTEWISE, primary_key=True)
    calling_ae_title: Mapped[str] = mapped_column(BYTEWISE, default="")
    # The references as JSON: [[sop_class_uid, sop_instance_uid], ...].
    references: Mapped[str] = mapped_column(Text, default="[]")
    requested_time: Mapped[str] = mapped_column(BYTEWISE, default="")
    # Seconds since the epoch: when accepted, and until when a claim holds it.
    requested_at: Mapped[float] = mapped_column(Float, index=True, default=0.0)
    leased_until: Mapped[float] = mapped_column(Float, default=0.0)


class LegalHold(Base):
    """A legal hold: while set, no study of the patient (or the one study) may be deleted, by
    an operator or by retention (see :mod:`pacs_indexer.lifecycle`)."""

    __tablename__ = "legal_holds"
    __table_args__ = (
        UniqueConstraint("tenant", "level", "subject", "issuer", name="uq_legal_holds_subject"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(BYTEWISE)
    level: Mapped[str] = mapped_column(BYTEWISE)  # "PATIENT" or "STUDY"
    subject: Mapped[str] = mapped_column(BYTEWISE)  # Patient ID or Study Instance UID
    issuer: Mapped[str] = mapped_column(BYTEWISE, default="")  # Issuer of Patient ID
    reason: Mapped[str] = mapped_column(Text, default="")
    set_time: Mapped[str] = mapped_column(BYTEWISE, default="")
    set_by: Mapped[str] = mapped_column(BYTEWISE, default="")
