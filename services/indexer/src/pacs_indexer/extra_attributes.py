"""Operator-configured searchable attributes beyond the built-in columns.

An operator lists keywords or tags per level (``{"STUDY": ["InstitutionName"], "SERIES":
["ProtocolName"]}``). Their values are kept in one narrow table per level (``study_attributes``
for PATIENT and STUDY attributes, ``series_attributes``, ``instance_attributes``), one row per
value, so any of them can be matched with the usual rules (PS3.4 C.2.2.2). Attributes added to
the configuration later are filled in for what is already indexed from the stored headers
(:func:`backfill`), once per attribute.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pacs_common.errors import InvalidArgumentError
from pydicom.dataset import Dataset
from sqlalchemy import ColumnElement, Connection, delete, exists, func, insert, select

from pacs_indexer.attributes import INDEXED, IndexedAttribute, Key, Level, resolve_key
from pacs_indexer.dicom_time import normalize_time
from pacs_indexer.matching import condition
from pacs_indexer.records import fold_person_name, now_rfc3339
from pacs_indexer.schema import (
    AttributeBackfill,
    Instance,
    InstanceAttribute,
    Series,
    SeriesAttribute,
    Study,
    StudyAttribute,
)

log = logging.getLogger(__name__)

Values = tuple[tuple[int, tuple[str, ...]], ...]
"""(tag, values) pairs of one instance's configured attributes."""

_TABLES: dict[Level, Any] = {
    Level.PATIENT: StudyAttribute,
    Level.STUDY: StudyAttribute,
    Level.SERIES: SeriesAttribute,
    Level.IMAGE: InstanceAttribute,
}
_OWNERS: dict[Level, Any] = {
    Level.PATIENT: Study,
    Level.STUDY: Study,
    Level.SERIES: Series,
    Level.IMAGE: Instance,
}


@dataclass(frozen=True)
class ExtraAttribute:
    """One configured attribute and where its values live."""

    key: Key
    level: Level

    @property
    def model(self) -> Any:
        """The ORM model of its values table."""
        return _TABLES[self.level]

    @property
    def owner(self) -> Any:
        """The ORM model of the rows that own its values."""
        return _OWNERS[self.level]

    def condition(self, value: str, fuzzy: bool) -> ColumnElement[bool] | None:
        """EXISTS a value of the owner row that matches ``value`` (None: universal)."""
        model = self.model
        stand_in = IndexedAttribute(
            self.key.keyword, self.level, model.value, model.value_key, model.value_key
        )
        inner = condition(self.key, stand_in, value, fuzzy)
        if inner is None:
            return None
        return exists(
            select(model.id).where(
                model.owner_pk == self.owner.id, model.tag == self.key.tag, inner
            )
        )


class ExtraAttributes:
    """The configuration: which extra attributes each level indexes."""

    def __init__(self, config: Mapping[str, Sequence[str]] | None = None) -> None:
        """Args:
        config: level name (PATIENT, STUDY, SERIES, IMAGE) -> keywords or 8-hex tags.

        Raises:
            InvalidArgumentError: unknown level or attribute, or one that is already indexed.
        """
        self.by_tag: dict[int, ExtraAttribute] = {}
        for level_name, names in (config or {}).items():
            try:
                level = Level[level_name.strip().upper()]
            except KeyError:
                raise InvalidArgumentError(f"unknown query level {level_name!r}") from None
            for name in names:
                key = resolve_key(name)
                if key.keyword in INDEXED:
                    raise InvalidArgumentError(f"{key.keyword} is indexed already")
                if key.vr == "SQ":
                    raise InvalidArgumentError(f"{name}: sequences cannot be matched")
                self.by_tag[key.tag] = ExtraAttribute(key, level)

    def __bool__(self) -> bool:
        return bool(self.by_tag)

    def get(self, key: Key) -> ExtraAttribute | None:
        """The configured attribute behind ``key``, if any."""
        return self.by_tag.get(key.tag)

    def in_table(self, model: Any) -> list[ExtraAttribute]:
        """The attributes whose values live in ``model``'s table."""
        return [a for a in self.by_tag.values() if a.model is model]

    def values_of(self, dataset: Dataset) -> Values:
        """The configured attributes' values in a header (``('',)`` when absent)."""
        found = []
        for tag, attribute in sorted(self.by_tag.items()):
            element = dataset.get(tag)
            raw: Any = None if element is None else element.value
            found.append((tag, _strings(raw, attribute.key.vr)))
        return tuple(found)

    def values_in_json(self, header: Mapping[str, Any], tags: Iterable[int]) -> Values:
        """The same, from a stored DICOM JSON header (for backfilling)."""
        found = []
        for tag in tags:
            element = header.get(f"{tag:08X}") or {}
            raw = element.get("Value")
            texts = [v.get("Alphabetic", "") if isinstance(v, dict) else v for v in raw or []]
            found.append((tag, _strings(texts, self.by_tag[tag].key.vr)))
        return tuple(found)


def _strings(raw: Any, vr: str) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ("",)
    items = (
        list(raw) if isinstance(raw, list | tuple) or type(raw).__name__ == "MultiValue" else [raw]
    )
    values = tuple(str(item).strip() for item in items if str(item).strip())
    return values or ("",)


def value_key(vr: str, value: str) -> str:
    """What matching compares: case-folded person names, normalised times, else the value."""
    if vr == "PN":
        return fold_person_name(value)
    if vr == "TM":
        return normalize_time(value)
    return value


def write_values(
    conn: Connection,
    extras: ExtraAttributes,
    model: Any,
    owned: Mapping[int, Values],
) -> None:
    """Replace the values of the configured attributes of ``model``'s table for the owners."""
    attributes = {a.key.tag: a for a in extras.in_table(model)}
    if not attributes or not owned:
        return
    owners = sorted(owned)
    conn.execute(delete(model).where(model.owner_pk.in_(owners), model.tag.in_(sorted(attributes))))
    rows = [
        {
            "owner_pk": owner,
            "tag": tag,
            "value": value,
            "value_key": value_key(attributes[tag].key.vr, value),
        }
        for owner, values in owned.items()
        for tag, texts in values
        if tag in attributes
        for value in texts
    ]
    if rows:
        conn.execute(insert(model), rows)


def backfill(conn: Connection, extras: ExtraAttributes, batch: int = 1000) -> int:
    """Fill in configured attributes that were added after instances were indexed.

    Each (level, tag) is done once and recorded in ``attribute_backfills``.

    Returns:
        The number of owner rows written.
    """
    done = {
        (level, tag)
        for level, tag in conn.execute(select(AttributeBackfill.level, AttributeBackfill.tag))
    }
    written = 0
    for model in (StudyAttribute, SeriesAttribute, InstanceAttribute):
        pending = [
            a for a in extras.in_table(model) if (model.__tablename__, a.key.tag) not in done
        ]
        if not pending:
            continue
        tags = [a.key.tag for a in pending]
        subset = ExtraAttributes()
        subset.by_tag = {a.key.tag: a for a in pending}
        last = 0
        while True:
            page = _headers_page(conn, model, last, batch)
            if not page:
                break
            owned = {owner: extras.values_in_json(json.loads(text), tags) for owner, text in page}
            write_values(conn, subset, model, owned)
            written += len(page)
            last = page[-1][0]
        conn.execute(
            insert(AttributeBackfill),
            [
                {"level": model.__tablename__, "tag": tag, "completed_time": now_rfc3339()}
                for tag in tags
            ],
        )
        log.info(
            "backfilled extra attributes", extra={"table": model.__tablename__, "rows": written}
        )
    return written


def _headers_page(conn: Connection, model: Any, after: int, size: int) -> list[tuple[int, str]]:
    """(owner pk, one header of it) for the next ``size`` owners after ``after``."""
    if model is InstanceAttribute:
        stmt = (
            select(Instance.id, Instance.dicom_json)
            .where(Instance.id > after)
            .order_by(Instance.id)
            .limit(size)
        )
        return [(pk, text) for pk, text in conn.execute(stmt)]
    owner = Series.study_pk if model is StudyAttribute else Series.id
    first = (
        select(owner.label("owner"), func.min(Instance.id).label("instance_pk"))
        .join(Instance, Instance.series_pk == Series.id)
        .where(owner > after)
        .group_by(owner)
        .order_by(owner)
        .limit(size)
        .subquery()
    )
    stmt = (
        select(first.c.owner, Instance.dicom_json)
        .join(Instance, Instance.id == first.c.instance_pk)
        .order_by(first.c.owner)
    )
    return [(pk, text) for pk, text in conn.execute(stmt)]
