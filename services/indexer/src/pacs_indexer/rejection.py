"""IHE IOCM rejection notes: instances a Key Object Selection rejects are hidden everywhere.

A rejection note (IHE RAD TF-2 4.66 "Rejection Note Stored", TF-3 IOCM) is a Key Object
Selection Document (PS3.3 A.35.4, SOP Class 1.2.840.10008.5.1.4.1.1.88.59) whose document title
(Concept Name Code Sequence of the root container, PS3.3 C.17.3) is one of the codes of PS3.16
CID 7011 "Rejected for ...". The instances it rejects are those of its Current Requested
Procedure Evidence Sequence (0040,A375) (PS3.3 C.17.2.2: Referenced Series Sequence →
Referenced SOP Sequence).

The index hides a rejected instance by never keeping it in the instance table: a note removes
the instances already indexed, and an instance that arrives after its note is withheld when it
is written. Every reader of the index — C-FIND and QIDO-RS at each level, the computed counts,
the stored metadata, and the retrieve paths (C-MOVE, C-GET and WADO-RS list instances through
the index) — therefore stops seeing it in the same transaction that indexes the note, whatever
the order of the events. The rejections are kept in their own table (``rejected_instances``),
keyed by tenant + SOP Instance UID, so redelivered notes and instances change nothing, and a
reindex from storage rebuilds the same state (the note is stored like any other instance).

The note itself is an ordinary KO instance: it stays stored, indexed and queryable. Deleting
the rejected objects from storage is a policy (:mod:`pacs_indexer.rejected_deletion`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pacs_common.errors import InvalidArgumentError
from pydicom.dataset import Dataset
from sqlalchemy import Connection, and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pacs_indexer import statements as sql
from pacs_indexer.records import InstanceRecord, normalize_rfc3339, now_rfc3339
from pacs_indexer.schema import (
    Instance,
    Patient,
    RejectedInstance,
    Series,
    SrMeasurement,
    Study,
)

log = logging.getLogger(__name__)

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
"""Key Object Selection Document Storage (PS3.4 B.5)."""

# PS3.16 CID 7011 "Rejected for Quality Reasons" and its siblings (IHE RAD TF-3 IOCM).
REJECTION_TITLES: dict[str, str] = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}
RETENTION_EXPIRED = "113039"

REJECTED = sql.table(RejectedInstance)
_CHUNK = 500


@dataclass(frozen=True)
class RejectedRef:
    """One instance a rejection note names."""

    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class RejectionNote:
    """A stored rejection note: its tenant, its own UID, its reason and what it rejects."""

    tenant: str
    sop_instance_uid: str
    reason_code: str
    references: tuple[RejectedRef, ...]
    # When the note was stored (RFC 3339), so that a reindex keeps the rejection's time.
    stored_time: str = ""


def _text(item: Dataset, keyword: str) -> str:
    return str(item.get(keyword, "") or "").strip()


def rejection_title(dataset: Dataset) -> str | None:
    """The CID 7011 code value of a KOS's document title, or None for any other title."""
    titles = dataset.get("ConceptNameCodeSequence") or []
    if len(titles) != 1:
        return None
    code, scheme = _text(titles[0], "CodeValue"), _text(titles[0], "CodingSchemeDesignator")
    return code if scheme == "DCM" and code in REJECTION_TITLES else None


def rejection_note(record: InstanceRecord) -> RejectionNote | None:
    """The rejection note ``record`` is, or None when it is not a KOS with a rejection title.

    The header is read back from the record's DICOM JSON (the KOS has no bulk data, so the
    whole document is there).

    Raises:
        InvalidArgumentError: the KOS header cannot be read back.
    """
    if record.sop_class_uid != KEY_OBJECT_SELECTION:
        return None
    try:
        dataset = Dataset.from_json(record.dicom_json)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # Dead-lettered with this reason (never indexed as if it rejected nothing).
        raise InvalidArgumentError(f"unreadable Key Object Selection header: {exc}") from exc
    code = rejection_title(dataset)
    if code is None:
        return None
    references: dict[str, RejectedRef] = {}
    for study in dataset.get("CurrentRequestedProcedureEvidenceSequence") or []:
        for series in study.get("ReferencedSeriesSequence") or []:
            for sop in series.get("ReferencedSOPSequence") or []:
                ref = RejectedRef(
                    _text(study, "StudyInstanceUID"),
                    _text(series, "SeriesInstanceUID"),
                    _text(sop, "ReferencedSOPClassUID"),
                    _text(sop, "ReferencedSOPInstanceUID"),
                )
                # A note never hides itself, nor does an empty reference hide anything.
                if ref.sop_instance_uid and ref.sop_instance_uid != record.sop_instance_uid:
                    references[ref.sop_instance_uid] = ref
    return RejectionNote(
        record.tenant,
        record.sop_instance_uid,
        code,
        tuple(references.values()),
        normalize_rfc3339(record.stored.stored_time),
    )


def withhold_rejected(
    conn: Connection, records: Sequence[InstanceRecord], touched_series: set[int]
) -> list[InstanceRecord]:
    """Apply the rejection notes among ``records`` and keep rejected instances out of the index.

    In the caller's transaction: records the rejections the notes make, removes the rejected
    instances already indexed (adding their series to ``touched_series``, whose counts the
    caller recomputes), and returns ``records`` without the rejected ones (each rejected one
    withheld is remembered as stored, so that the deletion policy removes it from storage).
    """
    notes = [note for note in map(rejection_note, records) if note is not None]
    for note in notes:
        _record_note(conn, note, touched_series)
    rejected = _rejected_among(conn, records)
    if not rejected:
        return list(records)
    kept: list[InstanceRecord] = []
    for record in records:
        if (record.tenant, record.sop_instance_uid) in rejected:
            _seen_stored(conn, record)
        else:
            kept.append(record)
    _drop_measurements(conn, rejected)
    log.info("rejected instances withheld", extra={"count": len(records) - len(kept)})
    return kept


def _insert_missing(dialect: str) -> type[postgresql.Insert] | type[sqlite.Insert]:
    return postgresql.Insert if dialect == "postgresql" else sqlite.Insert


def _record_note(conn: Connection, note: RejectionNote, touched_series: set[int]) -> None:
    """Remember what ``note`` rejects and take the rejected instances already indexed out of
    the instance table.

    The first note to reject an instance is kept, except that 113039 "Data Retention Policy
    Expired" supersedes the other reasons (it asks for deletion), so that the outcome does not
    depend on the order the notes arrive in.
    """
    if not note.references:
        return
    now = note.stored_time or now_rfc3339()
    insert = _insert_missing(conn.dialect.name)(REJECTED)
    insert = insert.on_conflict_do_update(
        index_elements=["tenant", "sop_instance_uid"],
        set_={
            "reason_code": insert.excluded.reason_code,
            "note_sop_instance_uid": insert.excluded.note_sop_instance_uid,
            "rejected_time": insert.excluded.rejected_time,
        },
        where=and_(
            insert.excluded.reason_code == RETENTION_EXPIRED,
            REJECTED.c.reason_code != RETENTION_EXPIRED,
        ),
    )
    conn.execute(
        insert,
        [
            {
                "tenant": note.tenant,
                "sop_instance_uid": ref.sop_instance_uid,
                "study_instance_uid": ref.study_instance_uid,
                "series_instance_uid": ref.series_instance_uid,
                "sop_class_uid": ref.sop_class_uid,
                "patient_id": "",
                "reason_code": note.reason_code,
                "note_sop_instance_uid": note.sop_instance_uid,
                "rejected_time": now,
                "stored_time": "",
                "deleted_time": "",
            }
            for ref in note.references
        ],
    )
    sops = [ref.sop_instance_uid for ref in note.references]
    for start in range(0, len(sops), _CHUNK):
        chunk = sops[start : start + _CHUNK]
        indexed = conn.execute(
            select(
                Instance.sop_instance_uid,
                Instance.series_pk,
                Instance.sop_class_uid,
                Instance.stored_time,
                Series.series_instance_uid,
                Study.study_instance_uid,
                Patient.patient_id,
            )
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .join(Patient, Study.patient_pk == Patient.id)
            .where(Instance.tenant == note.tenant, Instance.sop_instance_uid.in_(chunk))
        ).all()
        for sop, series_pk, sop_class, stored_time, series_uid, study_uid, patient in indexed:
            ref = RejectedRef(study_uid, series_uid, sop_class, sop)
            _mark_stored(conn, note.tenant, ref, patient, stored_time)
            conn.execute(sql.delete_instance(), {"tenant": note.tenant, "sop": sop})
            touched_series.add(series_pk)
    log.info(
        "rejection note recorded",
        extra={"reason_code": note.reason_code, "count": len(note.references)},
    )


def _rejected_among(conn: Connection, records: Sequence[InstanceRecord]) -> set[tuple[str, str]]:
    """The (tenant, SOP Instance UID) of ``records`` that a rejection note rejected."""
    found: set[tuple[str, str]] = set()
    by_tenant: dict[str, list[str]] = {}
    for record in records:
        by_tenant.setdefault(record.tenant, []).append(record.sop_instance_uid)
    for tenant, sops in by_tenant.items():
        unique = sorted(set(sops))
        for start in range(0, len(unique), _CHUNK):
            stmt = select(RejectedInstance.sop_instance_uid).where(
                RejectedInstance.tenant == tenant,
                RejectedInstance.sop_instance_uid.in_(unique[start : start + _CHUNK]),
            )
            found.update((tenant, sop) for sop in conn.execute(stmt).scalars())
    return found


def _seen_stored(conn: Connection, record: InstanceRecord) -> None:
    ref = RejectedRef(
        record.study_instance_uid,
        record.series_instance_uid,
        record.sop_class_uid,
        record.sop_instance_uid,
    )
    _mark_stored(
        conn, record.tenant, ref, record.patient_id, normalize_rfc3339(record.stored.stored_time)
    )


def _mark_stored(
    conn: Connection, tenant: str, ref: RejectedRef, patient_id: str, stored_time: str
) -> None:
    """A rejected instance is (again) in storage: remember where, and since when, so that the
    deletion policy removes it (the instance's own UIDs win over what the note said)."""
    stored = stored_time or now_rfc3339()
    values = {
        "study_instance_uid": ref.study_instance_uid,
        "series_instance_uid": ref.series_instance_uid,
        "sop_class_uid": ref.sop_class_uid,
        "stored_time": stored,
    }
    if patient_id:
        values["patient_id"] = patient_id
    conn.execute(
        update(RejectedInstance)
        .where(
            RejectedInstance.tenant == tenant,
            RejectedInstance.sop_instance_uid == ref.sop_instance_uid,
            RejectedInstance.stored_time < stored,
        )
        .values(**values)
    )


def _drop_measurements(conn: Connection, rejected: set[tuple[str, str]]) -> None:
    """A rejected structured report's measurements are hidden too (``pacs_indexer.reports``
    writes them before the instance rows)."""
    by_tenant: dict[str, list[str]] = {}
    for tenant, sop in rejected:
        by_tenant.setdefault(tenant, []).append(sop)
    for tenant, sops in by_tenant.items():
        conn.execute(
            delete(SrMeasurement).where(
                SrMeasurement.tenant == tenant, SrMeasurement.sop_instance_uid.in_(sops)
            )
        )


def rejected_uids(conn: Connection, tenant: str) -> set[str]:
    """Every SOP Instance UID of ``tenant`` that a rejection note rejected."""
    stmt = select(RejectedInstance.sop_instance_uid).where(RejectedInstance.tenant == tenant)
    return set(conn.execute(stmt).scalars())
