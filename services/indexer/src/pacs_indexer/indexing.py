"""Writing the index: idempotent upserts of instances (with their patient, study and series) and
removals, each followed by recomputing the counts and modalities that queries return.

Every write is keyed by tenant + UID, so redelivered events change nothing, and an instance that
arrives before or after its siblings ends in the same rows. When two objects of one SOP
Instance UID arrive, the one stored later wins (``stored_time``), whatever the order of the
events; a tombstone keeps a late event from bringing back a deleted instance. A batch is one
transaction of set-based statements (one upsert per table per batch), so loading many
instances costs a few round trips, not a few per instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.orm import Session

from pacs_indexer import statements as sql
from pacs_indexer.dicom_time import normalize_datetime, normalize_time
from pacs_indexer.extra_attributes import ExtraAttributes, write_values
from pacs_indexer.patients import locked_demographics, merged_into
from pacs_indexer.records import InstanceRecord, fold_person_name, identity_of, normalize_rfc3339
from pacs_indexer.rejection import withhold_rejected
from pacs_indexer.schema import InstanceAttribute, SeriesAttribute, StudyAttribute

_CHUNK = 500
_PATIENT_COLUMNS = frozenset(
    {"patient_name", "patient_name_folded", "patient_birth_date", "patient_sex"}
)


@dataclass
class _Touched:
    """Rows whose counts must be recomputed, and which may have become empty."""

    series: set[int] = field(default_factory=set)
    studies: set[int] = field(default_factory=set)
    patients: set[int] = field(default_factory=set)


def _chunks(values: Sequence[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield list(values[start : start + _CHUNK])


def _merged(
    rows: dict[tuple[str, str], dict[str, Any]], key: tuple[str, str], row: dict[str, Any]
) -> None:
    """Add ``row`` under ``key``; over an earlier row of that key its empty values ('' or
    None) keep the earlier ones, as the upsert's ``keep_known`` does across transactions."""
    earlier = rows.get(key)
    rows[key] = (
        row
        if earlier is None
        else {**earlier, **{c: v for c, v in row.items() if v is not None and v != ""}}
    )


def _by_tenant(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for tenant, key in keys:
        grouped.setdefault(tenant, []).append(key)
    return grouped


def _stored(record: InstanceRecord) -> str:
    return normalize_rfc3339(record.stored.stored_time)


def _upsert(
    conn: Connection,
    target: Table,
    keys: tuple[str, ...],
    rows: list[dict[str, Any]],
    keep_known: bool = True,
) -> None:
    if not rows:
        return
    columns = tuple(rows[0])
    known = frozenset(c for c in columns if keep_known and not c.endswith("_pk"))
    guarded = _PATIENT_COLUMNS if target is sql.PATIENTS else frozenset()
    stmt = sql.upsert(conn.dialect.name, target, columns, keys, keep_known=known, guarded=guarded)
    conn.execute(stmt, rows)


def _ids(
    conn: Connection, target: Table, key_column: str, wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, Any]]:
    """Map (tenant, key) to (id, parent pk) for the existing rows among ``wanted``."""
    found: dict[tuple[str, str], tuple[int, Any]] = {}
    stmt = sql.ids_by_key(target, key_column)
    for tenant, keys in _by_tenant(wanted).items():
        for chunk in _chunks(sorted(keys)):
            for row in conn.execute(stmt, {"tenant": tenant, "keys": chunk}):
                found[(tenant, row[1])] = (row[0], row[2] if len(row) > 2 else None)
    return found


def _fresh(
    conn: Connection, records: Sequence[InstanceRecord], touched: _Touched
) -> list[InstanceRecord]:
    """Drop records older than what is indexed or than a deletion; remember the series that
    the others may leave."""
    newest: dict[tuple[str, str], InstanceRecord] = {}
    for record in records:
        key = (record.tenant, record.sop_instance_uid)
        earlier = newest.get(key)
        # As when applied one by one: a later record wins unless both say when they were
        # stored and it was stored earlier.
        if earlier is None or not _stored(record) or _stored(record) >= _stored(earlier):
            newest[key] = record
    for tenant, sops in _by_tenant(list(newest)).items():
        for chunk in _chunks(sorted(sops)):
            params = {"tenant": tenant, "keys": chunk}
            for sop, deleted_time in conn.execute(sql.tombstones(), params):
                stored = _stored(newest[(tenant, sop)])
                if stored and deleted_time and stored <= deleted_time:
                    del newest[(tenant, sop)]  # stored before it was deleted: a late event
            for sop, series_pk, stored_time in conn.execute(sql.indexed_versions(), params):
                candidate = newest.get((tenant, sop))
                if candidate is None:
                    continue
                if stored_time and _stored(candidate) and _stored(candidate) < stored_time:
                    del newest[(tenant, sop)]
                else:
                    touched.series.add(series_pk)
    return list(newest.values())


def upsert_instances(
    session: Session,
    records: Sequence[InstanceRecord],
    extras: ExtraAttributes | None = None,
) -> list[InstanceRecord]:
    """Index ``records`` (in the caller's transaction) and recompute what they change.

    Args:
        extras: the configured extra attributes, whose values (carried by the records) are
            written too.

    Returns:
        The records that were written; records older than the indexed version are skipped.
    """
    conn = session.connection()
    touched = _Touched()
    # IHE IOCM: rejection notes hide what they reject, and rejected instances stay out.
    records = withhold_rejected(conn, records, touched.series)
    fresh = _fresh(conn, records, touched)
    if not fresh:
        recompute(session, touched)
        return []
    patients = _upsert_patients(conn, fresh)
    fresh = _with_registry_demographics(conn, fresh, patients)
    studies = _upsert_studies(conn, fresh, patients, touched)
    series = _upsert_series(conn, fresh, studies, touched)
    _upsert(
        conn,
        sql.INSTANCES,
        ("tenant", "sop_instance_uid"),
        [
            {
                "tenant": r.tenant,
                "sop_instance_uid": r.sop_instance_uid,
                "series_pk": series[(r.tenant, r.series_instance_uid)],
                "sop_class_uid": r.sop_class_uid,
                "instance_number": r.instance_number,
                "transfer_syntax_uid": r.stored.transfer_syntax_uid,
                "storage_key": r.stored.key,
                "size": r.stored.size,
                "sha256": r.stored.sha256,
                "version_id": r.stored.version_id,
                "stored_time": _stored(r),
                "dicom_json": r.dicom_json,
            }
            for r in fresh
        ],
        keep_known=False,  # a new version of an instance replaces it whole
    )
    touched.series.update(series.values())
    if extras:
        _write_extras(conn, extras, fresh, studies, series)
    recompute(session, touched)
    return fresh


def _write_extras(
    conn: Connection,
    extras: ExtraAttributes,
    records: Sequence[InstanceRecord],
    studies: dict[tuple[str, str], int],
    series: dict[tuple[str, str], int],
) -> None:
    write_values(
        conn,
        extras,
        StudyAttribute,
        {studies[(r.tenant, r.study_instance_uid)]: r.extra_values for r in records},
    )
    write_values(
        conn,
        extras,
        SeriesAttribute,
        {series[(r.tenant, r.series_instance_uid)]: r.extra_values for r in records},
    )
    if extras.in_table(InstanceAttribute):
        keys = [(r.tenant, r.sop_instance_uid) for r in records]
        instances = _ids(conn, sql.INSTANCES, "sop_instance_uid", keys)
        write_values(
            conn,
            extras,
            InstanceAttribute,
            {instances[(r.tenant, r.sop_instance_uid)][0]: r.extra_values for r in records},
        )


def _upsert_level(
    conn: Connection,
    target: Table,
    key_column: str,
    rows: dict[tuple[str, str], dict[str, Any]],
) -> tuple[dict[tuple[str, str], int], set[Any]]:
    """Upsert rows of one level; returns their ids and the parents they had before."""
    before = _ids(conn, target, key_column, rows)
    _upsert(conn, target, ("tenant", key_column), list(rows.values()))
    ids = {key: pk for key, (pk, _) in before.items()}
    missing = [key for key in rows if key not in ids]
    ids.update({key: pk for key, (pk, _) in _ids(conn, target, key_column, missing).items()})
    return ids, {parent for _, parent in before.values()}


def _upsert_patients(
    conn: Connection, records: Sequence[InstanceRecord]
) -> dict[tuple[str, str], int]:
    """Upsert the patients of ``records``; map (tenant, record's patient key) to the row id.

    Records of a patient that was merged away are filed under the merge target.
    """
    redirects = merged_into(conn, {(r.tenant, r.patient_key) for r in records})
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        key = redirects.get((r.tenant, r.patient_key), r.patient_key)
        patient_id, issuer = (
            (r.patient_id, r.issuer_of_patient_id) if key == r.patient_key else identity_of(key)
        )
        _merged(
            rows,
            (r.tenant, key),
            {
                "tenant": r.tenant,
                "patient_key": key,
                "patient_id": patient_id,
                "issuer_of_patient_id": issuer,
                "patient_name": r.patient_name,
                "patient_name_folded": fold_person_name(r.patient_name),
                "patient_birth_date": r.patient_birth_date,
                "patient_sex": r.patient_sex,
            },
        )
    ids, _ = _upsert_level(conn, sql.PATIENTS, "patient_key", rows)
    return {
        (r.tenant, r.patient_key): ids[
            (r.tenant, redirects.get((r.tenant, r.patient_key), r.patient_key))
        ]
        for r in records
    }


def _with_registry_demographics(
    conn: Connection, records: list[InstanceRecord], patients: dict[tuple[str, str], int]
) -> list[InstanceRecord]:
    """Headers of patients whose demographics the registry corrected show its values."""
    locked = locked_demographics(conn, patients.values())
    if not locked:
        return records
    patched = []
    for r in records:
        demographics = locked.get(patients[(r.tenant, r.patient_key)])
        patched.append(
            r if demographics is None else replace(r, dicom_json=demographics.patch(r.dicom_json))
        )
    return patched


def _upsert_studies(
    conn: Connection,
    records: Sequence[InstanceRecord],
    patients: dict[tuple[str, str], int],
    touched: _Touched,
) -> dict[tuple[str, str], int]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        _merged(
            rows,
            (r.tenant, r.study_instance_uid),
            {
                "tenant": r.tenant,
                "study_instance_uid": r.study_instance_uid,
                "patient_pk": patients[(r.tenant, r.patient_key)],
                "study_date": r.study_date,
                "study_time": r.study_time,
                "study_time_norm": normalize_time(r.study_time),
                "study_datetime_norm": normalize_datetime(r.study_date, r.study_time),
                "accession_number": r.accession_number,
                "study_id": r.study_id,
                "study_description": r.study_description,
                "referring_physician_name": r.referring_physician_name,
                "referring_physician_name_folded": fold_person_name(r.referring_physician_name),
            },
        )
    ids, previous_patients = _upsert_level(conn, sql.STUDIES, "study_instance_uid", rows)
    touched.patients.update(previous_patients)
    touched.patients.update(row["patient_pk"] for row in rows.values())
    return ids


def _upsert_series(
    conn: Connection,
    records: Sequence[InstanceRecord],
    studies: dict[tuple[str, str], int],
    touched: _Touched,
) -> dict[tuple[str, str], int]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        _merged(
            rows,
            (r.tenant, r.series_instance_uid),
            {
                "tenant": r.tenant,
                "series_instance_uid": r.series_instance_uid,
                "study_pk": studies[(r.tenant, r.study_instance_uid)],
                "modality": r.modality,
                "series_number": r.series_number,
                "series_description": r.series_description,
                "body_part_examined": r.body_part_examined,
            },
        )
    ids, previous_studies = _upsert_level(conn, sql.SERIES, "series_instance_uid", rows)
    touched.studies.update(previous_studies)
    touched.studies.update(row["study_pk"] for row in rows.values())
    return ids


def delete_instance(
    session: Session, tenant: str, sop_instance_uid: str, deleted_time: str = ""
) -> bool:
    """Remove one instance from the index and recompute its series and study.

    Args:
        deleted_time: when storage removed it (RFC 3339). When given, a tombstone keeps an
            older ``InstanceStored`` delivered later from bringing the instance back.

    Returns:
        Whether the instance was indexed.
    """
    conn = session.connection()
    if deleted_time:
        conn.execute(
            sql.tombstone(conn.dialect.name),
            {
                "tenant": tenant,
                "sop_instance_uid": sop_instance_uid,
                "deleted_time": normalize_rfc3339(deleted_time),
            },
        )
    params = {"tenant": tenant, "sop": sop_instance_uid}
    series_pk = conn.execute(sql.instance_location(), params).scalar_one_or_none()
    if series_pk is None:
        return False
    conn.execute(sql.delete_instance(), params)
    recompute(session, _Touched(series={series_pk}))
    return True


def recompute(session: Session, touched: _Touched) -> None:
    """Recompute counts and ModalitiesInStudy of the touched rows; remove emptied ones.

    The computed attributes follow PS3.4 C.6.2.1.2 (NumberOfStudyRelatedSeries,
    NumberOfStudyRelatedInstances, ModalitiesInStudy) and C.6.2.1.3
    (NumberOfSeriesRelatedInstances).
    """
    conn = session.connection()
    for chunk in _chunks(sorted(touched.series)):
        conn.execute(sql.count_series_instances(), {"ids": chunk})
        touched.studies.update(conn.execute(sql.studies_of_series(), {"ids": chunk}).scalars())
        conn.execute(sql.delete_empty_series(), {"ids": chunk})
    for chunk in _chunks(sorted(touched.studies)):
        conn.execute(sql.count_study_children(), {"ids": chunk})
        modalities: dict[int, list[str]] = {pk: [] for pk in chunk}
        for study_pk, modality in conn.execute(sql.modalities_of_studies(), {"ids": chunk}):
            modalities[study_pk].append(modality)
        conn.execute(
            sql.set_modalities(),
            [{"pk": pk, "modalities": "\\".join(found)} for pk, found in modalities.items()],
        )
        touched.patients.update(conn.execute(sql.patients_of_studies(), {"ids": chunk}).scalars())
        conn.execute(sql.delete_empty_studies(), {"ids": chunk})
    for chunk in _chunks(sorted(touched.patients)):
        conn.execute(sql.delete_orphan_patients(), {"ids": chunk})
