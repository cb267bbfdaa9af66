"""Matching values to SQL conditions, per the kind of matching and the VR (PS3.4 C.2.2.2).

- Universal matching (C.2.2.2.3): an empty value, or a lone ``*``, filters nothing.
- Empty value matching (C.2.2.2.1): ``""`` matches only empty or absent values.
- List of UID matching (C.2.2.2.2): backslash-separated UIDs match any of them.
- Wild card matching (C.2.2.2.4): ``*`` and ``?`` in values of string VRs other than DA, TM,
  DT, UI and the numeric VRs.
- Range matching (C.2.2.2.5): ``a-b``, ``a-`` and ``-b`` on DA and TM, inclusive.
- Single value matching (C.2.2.2.1) otherwise; case-sensitive, except person names when the
  query asks for fuzzy (case-insensitive) matching, as C.2.2.2.1 permits for PN.
"""

from __future__ import annotations

from typing import Any

from pacs_common.errors import InvalidArgumentError
from sqlalchemy import ColumnElement, and_, exists, or_, select, true

from pacs_indexer.attributes import IndexedAttribute, Key
from pacs_indexer.dicom_time import is_date, is_time, normalize_datetime, normalize_time
from pacs_indexer.records import fold_person_name
from pacs_indexer.schema import Series, Study

_NO_WILDCARD_VRS = frozenset(
    {"DA", "TM", "DT", "UI", "IS", "DS", "SL", "SS", "UL", "US", "FL", "FD", "SV", "UV", "AS"}
)
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
_EMPTY_VALUE = '""'


def has_wildcard(value: str) -> bool:
    """True if ``value`` uses ``*`` or ``?`` (PS3.4 C.2.2.2.4)."""
    return "*" in value or "?" in value


def like_pattern(value: str) -> str:
    """Translate a DICOM wildcard value to a LIKE pattern with ``\\`` as escape character."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def condition(
    key: Key, attribute: IndexedAttribute, value: str, fuzzy: bool
) -> ColumnElement[bool] | None:
    """The SQL condition for matching ``attribute`` against ``value``; None for universal.

    Raises:
        InvalidArgumentError: the value is not a valid matching value for the VR.
    """
    value = value.strip()
    if value in ("", "*"):
        return None
    if attribute.keyword == "ModalitiesInStudy":
        return _modalities_in_study(value)
    if value == _EMPTY_VALUE:
        return _empty(key, attribute.column)
    by_vr = {"UI": _uid_list, "DA": _date, "TM": _time}.get(key.vr)
    if by_vr is not None:
        return by_vr(key, attribute, value)
    return _text(key, attribute, value, fuzzy)


def _empty(key: Key, column: Any) -> ColumnElement[bool]:
    if key.vr in _INTEGER_VRS:
        return column.is_(None)  # type: ignore[no-any-return]
    return column == ""  # type: ignore[no-any-return]


def _text(key: Key, attribute: IndexedAttribute, value: str, fuzzy: bool) -> ColumnElement[bool]:
    """Single value or wild card matching of strings and integers."""
    column = attribute.column
    if key.vr in _INTEGER_VRS:
        return column == _integer(key, value)  # type: ignore[no-any-return]
    if attribute.folded is not None and fuzzy:
        column, value = attribute.folded, fold_person_name(value)
    if has_wildcard(value) and key.vr not in _NO_WILDCARD_VRS:
        return column.like(like_pattern(value), escape="\\")  # type: ignore[no-any-return]
    return column == value  # type: ignore[no-any-return]


def _uid_list(key: Key, attribute: IndexedAttribute, value: str) -> ColumnElement[bool]:
    column = attribute.column
    uids = [uid.strip() for uid in value.split("\\") if uid.strip()]
    if any(has_wildcard(uid) for uid in uids):
        raise InvalidArgumentError(f"{key.keyword}: wildcards are not allowed in UIDs")
    if len(uids) == 1:
        return column == uids[0]  # type: ignore[no-any-return]
    return column.in_(uids)  # type: ignore[no-any-return]


def _integer(key: Key, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidArgumentError(f"{key.keyword}: {value!r} is not an integer") from None


def _split_range(value: str) -> tuple[str, str] | None:
    if value.count("-") != 1:
        return None
    low, _, high = value.partition("-")
    return low.strip(), high.strip()


def date_bounds(key: Key, value: str) -> tuple[str, str]:
    """(low, high) of a DA single value or range; ``''`` for an open end.

    Raises:
        InvalidArgumentError: not ``YYYYMMDD``, ``a-b``, ``a-`` or ``-b``.
    """
    bounds = _split_range(value)
    if bounds is None:
        if not is_date(value):
            raise InvalidArgumentError(f"{key.keyword}: {value!r} is not a date YYYYMMDD")
        return value, value
    low, high = bounds
    if (low and not is_date(low)) or (high and not is_date(high)) or not (low or high):
        raise InvalidArgumentError(
            f"{key.keyword}: {value!r} is not a date range YYYYMMDD-YYYYMMDD"
        )
    return low, high


def time_bounds(key: Key, value: str) -> tuple[str, str]:
    """(low, high) of a TM single value or range as given; ``''`` for an open end.

    Raises:
        InvalidArgumentError: not ``HH[MM[SS[.F]]]`` or a range of those.
    """
    bounds = _split_range(value)
    if bounds is None:
        if not is_time(value):
            raise InvalidArgumentError(f"{key.keyword}: {value!r} is not a time HHMMSS")
        return value, value
    low, high = bounds
    if (low and not is_time(low)) or (high and not is_time(high)) or not (low or high):
        raise InvalidArgumentError(f"{key.keyword}: {value!r} is not a time range")
    return low, high


def _date(key: Key, attribute: IndexedAttribute, value: str) -> ColumnElement[bool]:
    low, high = date_bounds(key, value)
    if low == high:
        return attribute.column == low  # type: ignore[no-any-return]
    return _between(attribute.column, low, high)


def _time(key: Key, attribute: IndexedAttribute, value: str) -> ColumnElement[bool]:
    low, high = time_bounds(key, value)
    return _between(
        attribute.normalized,
        normalize_time(low) if low else "",
        normalize_time(high, upper=True) if high else "",
    )


def combined_datetime(
    date_key: Key, date_value: str, time_key: Key, time_value: str
) -> ColumnElement[bool]:
    """StudyDate and StudyTime matched as one date-time range (PS3.4 C.2.2.2.5.1): dates
    ``20060705-20060707`` with times ``1000-1800`` match from 5 July 10:00 to 7 July 18:00."""
    date_low, date_high = date_bounds(date_key, date_value)
    time_low, time_high = ("", "")
    if time_value.strip() not in ("", "*"):
        time_low, time_high = time_bounds(time_key, time_value.strip())
    low = normalize_datetime(date_low, time_low) if date_low else ""
    high = normalize_datetime(date_high, time_high, upper=True) if date_high else ""
    return _between(Study.study_datetime_norm, low, high)


def _between(column: Any, low: str, high: str) -> ColumnElement[bool]:
    """Inclusive range; an absent value never matches a range (C.2.2.2.5)."""
    parts: list[ColumnElement[bool]] = [column != ""]
    if low:
        parts.append(column >= low)
    if high:
        parts.append(column <= high)
    return and_(*parts)


def _modalities_in_study(value: str) -> ColumnElement[bool]:
    """A study matches if one of its series has one of the modalities (PS3.4 C.6.2.1.2)."""
    wanted = [v.strip() for v in value.split("\\") if v.strip()]
    conditions: list[ColumnElement[bool]] = []
    for modality in wanted:
        if has_wildcard(modality):
            conditions.append(Series.modality.like(like_pattern(modality), escape="\\"))
        else:
            conditions.append(Series.modality == modality)
    if not conditions:
        return true()
    return exists(select(Series.id).where(Series.study_pk == Study.id, or_(*conditions)))
