"""Finding patients' studies, series and instances in the index (C-FIND / QIDO-RS semantics).

A query is an identifier (PS3.4 C.4.1.1.3): matching keys with their matching values, plus
return keys. Each match is returned as a DICOM JSON object (PS3.18 F.2) holding the unique keys
of its level and the levels above (PS3.4 C.4.1.2.1), the matching keys, the return keys, and
the computed attributes of its level. Results come in a stable order, and ``total_count`` tells
how many matched regardless of paging.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pacs_common.errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session, defer

from pacs_indexer.attributes import (
    ALWAYS_RETURNED,
    COMPUTED,
    Key,
    Level,
    indexed,
    resolve_key,
)
from pacs_indexer.extra_attributes import ExtraAttributes
from pacs_indexer.matching import combined_datetime, condition
from pacs_indexer.schema import Instance, Patient, Series, Study

# Keys of the C-FIND identifier that steer the query rather than select attributes.
_CONTROL_KEYWORDS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})


@dataclass(frozen=True)
class FindQuery:
    """One query at one level, already taken out of its protobuf."""

    tenant: str
    level: Level
    match: Mapping[str, str] = field(default_factory=dict)
    return_keys: Sequence[str] = ()
    limit: int = 0
    offset: int = 0
    fuzzy: bool = False
    combined_datetime: bool = False
    extras: ExtraAttributes | None = None


@dataclass(frozen=True)
class FindResult:
    """Matches as DICOM JSON objects, and how many matched in total."""

    datasets: list[dict[str, Any]]
    total_count: int


_ENTITIES: dict[Level, tuple[Any, ...]] = {
    Level.STUDY: (Study, Patient),
    Level.SERIES: (Series, Study, Patient),
    Level.IMAGE: (Instance, Series, Study, Patient),
}


def _base(level: Level, *columns: Any) -> Select[Any]:
    """SELECT … FROM the level's table joined up to the patient."""
    stmt = select(*columns)
    if level == Level.STUDY:
        return stmt.select_from(Study).join(Patient, Study.patient_pk == Patient.id)
    if level == Level.SERIES:
        return (
            stmt.select_from(Series)
            .join(Study, Series.study_pk == Study.id)
            .join(Patient, Study.patient_pk == Patient.id)
        )
    return (
        stmt.select_from(Instance)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
    )


# Up to this many matches, a page is cut from all the matches, sorted, rather than from a walk
# of the index already in result order (see _order). Measured on PostgreSQL with the 100 000
# studies of bench_index.py, pages of 100: sorting costs about the matches, ~2 ms for 52 name
# matches, 5-12 ms for 500-1 500, ~20 ms for 5 000-10 000; the walk costs about the studies it
# passes before the page is full, ~190 ms for 52 name matches (all of them), 20-50 ms for
# 500-1 500, 4-7 ms for 5 000-10 000. The price: a date range with 1 389 matches, whose walk
# passes only matches, went from ~4 ms to 10-23 ms (with ModalitiesInStudy).
_SORT_MATCHES_UP_TO = 2000


def _order(level: Level, sort_matches: bool = False) -> list[Any]:
    """A stable order: newest studies first; series and instances by number, then by row.

    With ``sort_matches`` the first key is an expression no index provides (the same values,
    so the same order): the planner cannot avoid the sort, so it finds the matches through the
    most selective index and sorts them. Otherwise, when it overestimates the matches (a name
    prefix estimated at 1 008 studies matched 52), PostgreSQL prefers walking the index that
    is already in this order (ix_studies_tenant_date backwards, at the study level) and
    filtering until the page is full, which reads the whole tenant when fewer than a page
    match: 261 762 buffers and ~190 ms instead of 116 buffers and ~2 ms.
    """
    if level == Level.STUDY:
        date = Study.study_date.concat("") if sort_matches else Study.study_date
        return [date.desc(), Study.study_time_norm.desc(), Study.id.desc()]
    if level == Level.SERIES:
        study = Series.study_pk + 0 if sort_matches else Series.study_pk
        return [study, Series.series_number.asc().nulls_last(), Series.id]
    series = Instance.series_pk + 0 if sort_matches else Instance.series_pk
    return [series, Instance.instance_number.asc().nulls_last(), Instance.id]


def _validate(query: FindQuery) -> None:
    if not query.tenant.strip():
        raise InvalidArgumentError("tenant is required")
    if query.limit < 0 or query.offset < 0:
        raise InvalidArgumentError("limit and offset must not be negative")


def _conditions(query: FindQuery) -> tuple[list[ColumnElement[bool]], list[Key]]:
    """SQL conditions of the matching keys, and the keys to return in each result."""
    # The tenant on every joined table, not only the level's: each index starts with the
    # tenant, and with equality on both columns the planner (SQLite's especially, before any
    # ANALYZE) picks the selective index of the matched table instead of scanning the tenant.
    conditions: list[ColumnElement[bool]] = [
        entity.tenant == query.tenant for entity in _ENTITIES[query.level]
    ]
    returned: list[Key] = [resolve_key(keyword) for keyword in ALWAYS_RETURNED[query.level]]
    keys = {resolve_key(name): value for name, value in query.match.items()}
    combined = _combined_datetime(keys) if query.combined_datetime else None
    if combined is not None:
        conditions.append(combined)
    for key, value in keys.items():
        if key.keyword in _CONTROL_KEYWORDS:
            continue
        if combined is not None and key.keyword in ("StudyDate", "StudyTime"):
            returned.append(key)
            continue
        attribute = indexed(key)
        extra = query.extras.get(key) if attribute is None and query.extras else None
        level = attribute.level if attribute else extra.level if extra else Level.PATIENT
        if level > query.level:
            raise InvalidArgumentError(
                f"{key.keyword} is a {level.name} level attribute and cannot be "
                f"matched at the {query.level.name} level"
            )
        if extra is not None:
            where = extra.condition(value, query.fuzzy)
            if where is not None:
                conditions.append(where)
        # An attribute the index does not keep, or a computed count, cannot filter: it is
        # returned with universal matching, as PS3.4 C.2.2.1.1 lets an SCP treat optional keys.
        if attribute is not None and key.keyword not in COMPUTED - {"ModalitiesInStudy"}:
            where = condition(key, attribute, value, query.fuzzy)
            if where is not None:
                conditions.append(where)
        returned.append(key)
    for name in query.return_keys:
        key = resolve_key(name)
        if key.keyword not in _CONTROL_KEYWORDS:
            returned.append(key)
    unique: dict[int, Key] = {key.tag: key for key in returned}
    return conditions, list(unique.values())


def _combined_datetime(keys: Mapping[Key, str]) -> ColumnElement[bool] | None:
    """The combined StudyDate/StudyTime condition, when both are given with a date."""
    by_keyword = {key.keyword: (key, value) for key, value in keys.items()}
    date = by_keyword.get("StudyDate")
    time = by_keyword.get("StudyTime")
    if date is None or time is None or date[1].strip() in ("", "*", '""'):
        return None
    return combined_datetime(date[0], date[1].strip(), time[0], time[1])


def find(session: Session, query: FindQuery, max_results: int) -> FindResult:
    """Run one query.

    Raises:
        InvalidArgumentError: unknown keys, malformed matching values, missing tenant.
        ResourceExhaustedError: more than ``max_results`` matches and no ``limit`` given.
    """
    _validate(query)
    conditions, returned = _conditions(query)
    primary = _ENTITIES[query.level][0]
    total = session.execute(
        _base(query.level, func.count(primary.id)).where(*conditions)
    ).scalar_one()
    if query.limit == 0 and total - query.offset > max_results:
        raise ResourceExhaustedError(
            f"the query matches {total} {query.level.name.lower()} results, more than the "
            f"maximum of {max_results}: add matching keys, or page with limit and offset"
        )
    limit = min(query.limit or max_results, max_results)
    # Sorting is bounded by the matches; the walk of an ordered index, by the tenant's rows
    # when the page is not filled early (always so when the page reaches the last match).
    sort_matches = total <= max(_SORT_MATCHES_UP_TO, query.offset + limit)
    stmt = (
        _base(query.level, *_ENTITIES[query.level])
        .where(*conditions)
        .order_by(*_order(query.level, sort_matches))
        .offset(query.offset)
        .limit(limit)
    )
    if query.level == Level.IMAGE:
        # The stored header is read only when a return key needs it (see _headers_for).
        stmt = stmt.options(defer(Instance.dicom_json, raiseload=True))
    rows = session.execute(stmt).all()
    headers = _headers_for(session, query.level, rows, returned)
    datasets = [_dataset(row, returned, headers.get(row[0].id, {})) for row in rows]
    return FindResult(datasets=datasets, total_count=total)


def _headers_for(
    session: Session, level: Level, rows: Sequence[Any], returned: Sequence[Key]
) -> dict[int, dict[str, Any]]:
    """Stored headers to read non-indexed return keys from: the instance's own at the image
    level, one instance's of the study or series otherwise (values that do not vary inside
    it, such as PatientAge or InstitutionName)."""
    if not rows or all(indexed(key) is not None for key in returned):
        return {}
    ids = [row[0].id for row in rows]
    if level == Level.IMAGE:
        stored = session.execute(
            select(Instance.id, Instance.dicom_json).where(Instance.id.in_(ids))
        ).all()
        return {pk: json.loads(text) for pk, text in stored}
    owner = Series.study_pk if level == Level.STUDY else Series.id
    first = (
        select(owner.label("owner"), func.min(Instance.id).label("instance_pk"))
        .join(Instance, Instance.series_pk == Series.id)
        .where(owner.in_(ids))
        .group_by(owner)
        .subquery()
    )
    pairs = session.execute(
        select(first.c.owner, Instance.dicom_json).join(
            Instance, Instance.id == first.c.instance_pk
        )
    ).all()
    return {owner_pk: json.loads(text) for owner_pk, text in pairs}


def _dataset(row: Any, returned: Sequence[Key], header: Mapping[str, Any]) -> dict[str, Any]:
    entities = {type(entity): entity for entity in row}
    dataset: dict[str, Any] = {}
    for key in returned:
        attribute = indexed(key)
        if attribute is not None:
            entity = entities.get(attribute.column.class_)
            value = getattr(entity, attribute.column.key) if entity is not None else None
            dataset[key.hex] = element(key.vr, value)
        elif key.hex in header:
            dataset[key.hex] = header[key.hex]
        else:
            dataset[key.hex] = {"vr": key.vr}
    return dict(sorted(dataset.items()))


def element(vr: str, value: Any) -> dict[str, Any]:
    """A DICOM JSON attribute (PS3.18 F.2.2) for a value read from the index."""
    if value is None or value == "":
        return {"vr": vr}
    if vr in _INTEGER_VRS:
        return {"vr": vr, "Value": [int(value)]}
    values = str(value).split("\\")
    if vr == "PN":
        return {"vr": vr, "Value": [_person_name(v) for v in values]}
    return {"vr": vr, "Value": values}


def _person_name(value: str) -> dict[str, str]:
    """PS3.18 F.2.2: a PN value's alphabetic, ideographic and phonetic groups."""
    groups = value.split("=")
    names = ("Alphabetic", "Ideographic", "Phonetic")
    return {name: group for name, group in zip(names, groups, strict=False) if group}


def instance_metadata(
    session: Session, tenant: str, study_uid: str, series_uid: str, sop_uid: str
) -> str:
    """The stored header of one instance as DICOM JSON text.

    Raises:
        InvalidArgumentError: tenant or SOP Instance UID missing.
        NotFoundError: no such instance in this tenant (or not in the given study/series).
    """
    if not tenant.strip() or not sop_uid.strip():
        raise InvalidArgumentError("tenant and sop_instance_uid are required")
    stmt = _base(Level.IMAGE, Instance.dicom_json).where(
        Instance.tenant == tenant, Instance.sop_instance_uid == sop_uid
    )
    if study_uid:
        stmt = stmt.where(Study.study_instance_uid == study_uid)
    if series_uid:
        stmt = stmt.where(Series.series_instance_uid == series_uid)
    found: str | None = session.execute(stmt).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"instance {sop_uid} is not indexed in this tenant")
    return found


def study_metadata_page(
    session: Session,
    tenant: str,
    study_uid: str,
    series_uid: str,
    *,
    offset: int,
    limit: int,
) -> list[str]:
    """One page of the stored headers of a study (or one series of it), as DICOM JSON texts,
    series by series in series-number order, instances in instance-number order.

    Raises:
        InvalidArgumentError: tenant or StudyInstanceUID missing.
        NotFoundError: the study (or series) has no indexed instance in this tenant.
    """
    if not tenant.strip() or not study_uid.strip():
        raise InvalidArgumentError("tenant and study_instance_uid are required")
    stmt = _base(Level.IMAGE, Instance.dicom_json).where(
        Study.tenant == tenant, Study.study_instance_uid == study_uid
    )
    if series_uid:
        stmt = stmt.where(Series.series_instance_uid == series_uid)
    page = list(
        session.execute(
            stmt.order_by(
                Series.series_number.asc().nulls_last(),
                Series.id,
                Instance.instance_number.asc().nulls_last(),
                Instance.id,
            )
            .offset(offset)
            .limit(limit)
        ).scalars()
    )
    if not page and offset == 0:
        raise NotFoundError(f"study {study_uid} has no indexed instance in this tenant")
    return page
