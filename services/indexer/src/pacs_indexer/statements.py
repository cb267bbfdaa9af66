"""The SQL statements of the index writer, built once per dialect and reused.

Building a SQLAlchemy statement costs far more than running it on a small table; the writer
runs a dozen per event, so they are constructed once (``lru_cache``) with bound and expanding
parameters, and executed as Core statements on the session's connection.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    Delete,
    Executable,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from pacs_indexer.schema import DeletedInstance, Instance, Patient, Series, Study


def table(model: Any) -> Table:
    """The Core table of an ORM model."""
    result = model.__table__
    assert isinstance(result, Table)
    return result


PATIENTS = table(Patient)
STUDIES = table(Study)
SERIES = table(Series)
INSTANCES = table(Instance)
TOMBSTONES = table(DeletedInstance)

_PARENT = {
    "patients": None,
    "studies": "patient_pk",
    "series": "study_pk",
    "instances": "series_pk",
}


@lru_cache(maxsize=64)
def upsert(
    dialect: str,
    target: Table,
    columns: tuple[str, ...],
    keys: tuple[str, ...],
    *,
    keep_known: frozenset[str],
    guarded: frozenset[str] = frozenset(),
) -> Executable:
    """INSERT … ON CONFLICT (keys) DO UPDATE the other columns.

    Args:
        keep_known: columns where an empty incoming value (``''`` or NULL) keeps the stored
            one: instances of one study repeat its attributes, and one that leaves an
            attribute out must not blank it for the others, whatever the arrival order.
        guarded: columns left alone while the row's ``demographics_locked`` is set (patient
            demographics that the patient registry corrected).
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(target)
    updated: dict[str, Any] = {}
    for name in columns:
        if name in keys:
            continue
        incoming, current = stmt.excluded[name], target.c[name]
        if name not in keep_known:
            updated[name] = incoming
        elif target.c[name].nullable:
            updated[name] = func.coalesce(incoming, current)
        else:
            updated[name] = case((incoming != "", incoming), else_=current)
        if name in guarded:
            updated[name] = case((target.c.demographics_locked, current), else_=updated[name])
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=updated)


@lru_cache(maxsize=16)
def ids_by_key(target: Table, key_column: str) -> Select[Any]:
    """(id, key, parent pk) of the rows of one tenant whose key is in ``:keys``."""
    parent = _PARENT[target.name]
    columns = [target.c.id, target.c[key_column]]
    if parent:
        columns.append(target.c[parent])
    return select(*columns).where(
        target.c.tenant == bindparam("tenant"),
        target.c[key_column].in_(bindparam("keys", expanding=True)),
    )


@lru_cache(maxsize=1)
def tombstones() -> Select[Any]:
    """Deletion times of ``:keys`` SOP Instance UIDs of ``:tenant``."""
    return select(TOMBSTONES.c.sop_instance_uid, TOMBSTONES.c.deleted_time).where(
        TOMBSTONES.c.tenant == bindparam("tenant"),
        TOMBSTONES.c.sop_instance_uid.in_(bindparam("keys", expanding=True)),
    )


@lru_cache(maxsize=1)
def indexed_versions() -> Select[Any]:
    """(SOP Instance UID, series pk, stored time) of indexed ``:keys`` of ``:tenant``."""
    return select(
        INSTANCES.c.sop_instance_uid, INSTANCES.c.series_pk, INSTANCES.c.stored_time
    ).where(
        INSTANCES.c.tenant == bindparam("tenant"),
        INSTANCES.c.sop_instance_uid.in_(bindparam("keys", expanding=True)),
    )


@lru_cache(maxsize=2)
def tombstone(dialect: str) -> Executable:
    """Record a deletion time, keeping the latest of several."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(TOMBSTONES)
    latest = case(
        (stmt.excluded.deleted_time > TOMBSTONES.c.deleted_time, stmt.excluded.deleted_time),
        else_=TOMBSTONES.c.deleted_time,
    )
    return stmt.on_conflict_do_update(
        index_elements=["tenant", "sop_instance_uid"], set_={"deleted_time": latest}
    )


_IDS: BindParameter[Any] = bindparam("ids", expanding=True)


@lru_cache(maxsize=1)
def count_series_instances() -> Update:
    """NumberOfSeriesRelatedInstances of the ``:ids`` series."""
    count = (
        select(func.count(INSTANCES.c.id))
        .where(INSTANCES.c.series_pk == SERIES.c.id)
        .scalar_subquery()
    )
    return update(SERIES).where(SERIES.c.id.in_(_IDS)).values(number_of_instances=count)


@lru_cache(maxsize=1)
def studies_of_series() -> Select[Any]:
    """Distinct study pks of the ``:ids`` series."""
    return select(SERIES.c.study_pk).where(SERIES.c.id.in_(_IDS)).distinct()


@lru_cache(maxsize=1)
def delete_empty_series() -> Delete:
    """Remove the ``:ids`` series that have no instance left."""
    return delete(SERIES).where(SERIES.c.id.in_(_IDS), SERIES.c.number_of_instances == 0)


@lru_cache(maxsize=1)
def count_study_children() -> Update:
    """NumberOfStudyRelatedSeries and NumberOfStudyRelatedInstances of the ``:ids`` studies."""
    series_count = (
        select(func.count(SERIES.c.id)).where(SERIES.c.study_pk == STUDIES.c.id).scalar_subquery()
    )
    instance_count = (
        select(func.coalesce(func.sum(SERIES.c.number_of_instances), 0))
        .where(SERIES.c.study_pk == STUDIES.c.id)
        .scalar_subquery()
    )
    return (
        update(STUDIES)
        .where(STUDIES.c.id.in_(_IDS))
        .values(number_of_series=series_count, number_of_instances=instance_count)
    )


@lru_cache(maxsize=1)
def modalities_of_studies() -> Select[Any]:
    """(study pk, modality) pairs of the ``:ids`` studies, sorted."""
    return (
        select(SERIES.c.study_pk, SERIES.c.modality)
        .where(SERIES.c.study_pk.in_(_IDS), SERIES.c.modality != "")
        .distinct()
        .order_by(SERIES.c.study_pk, SERIES.c.modality)
    )


@lru_cache(maxsize=1)
def set_modalities() -> Update:
    """ModalitiesInStudy of one study (executemany over ``:pk``, ``:modalities``)."""
    return (
        update(STUDIES)
        .where(STUDIES.c.id == bindparam("pk"))
        .values(modalities_in_study=bindparam("modalities"))
    )


@lru_cache(maxsize=1)
def patients_of_studies() -> Select[Any]:
    """Distinct patient pks of the ``:ids`` studies."""
    return select(STUDIES.c.patient_pk).where(STUDIES.c.id.in_(_IDS)).distinct()


@lru_cache(maxsize=1)
def delete_empty_studies() -> Delete:
    """Remove the ``:ids`` studies that have no series left."""
    return delete(STUDIES).where(STUDIES.c.id.in_(_IDS), STUDIES.c.number_of_series == 0)


@lru_cache(maxsize=1)
def delete_orphan_patients() -> Delete:
    """Remove the ``:ids`` patients that have no study left."""
    return delete(PATIENTS).where(
        and_(PATIENTS.c.id.in_(_IDS), ~exists().where(STUDIES.c.patient_pk == PATIENTS.c.id))
    )


@lru_cache(maxsize=1)
def instance_location() -> Select[Any]:
    """The series pk of instance ``:sop`` of ``:tenant``."""
    return select(INSTANCES.c.series_pk).where(
        INSTANCES.c.tenant == bindparam("tenant"),
        INSTANCES.c.sop_instance_uid == bindparam("sop"),
    )


@lru_cache(maxsize=1)
def delete_instance() -> Delete:
    """Remove instance ``:sop`` of ``:tenant``."""
    return delete(INSTANCES).where(
        INSTANCES.c.tenant == bindparam("tenant"),
        INSTANCES.c.sop_instance_uid == bindparam("sop"),
    )
