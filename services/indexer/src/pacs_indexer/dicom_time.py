"""Normalised forms of DICOM dates and times, so that string order is chronological order.

A TM value (PS3.5 6.2) may stop after the hour, the minute or the second, and may carry up to
six fraction digits; ``1000`` and ``100000`` are the same time. Stored values are padded with
zeros to ``HHMMSS.FFFFFF``; the upper bound of a range is padded with the largest digits so that
``-1000`` includes everything up to 10:00:59.999999 (the whole precision the caller gave).
"""

from __future__ import annotations

import re

_TIME = re.compile(r"^([01]\d|2[0-3])([0-5]\d)?([0-5]\d|60)?(?:\.(\d{1,6}))?$")
_DATE = re.compile(r"^\d{8}$")


def is_date(value: str) -> bool:
    """True for a DA value ``YYYYMMDD`` (PS3.5 6.2)."""
    return bool(_DATE.match(value))


def is_time(value: str) -> bool:
    """True for a TM value ``HH[MM[SS[.F{1,6}]]]`` (PS3.5 6.2); ACR-NEMA colons are accepted."""
    return bool(_TIME.match(value.replace(":", "")))


def normalize_time(value: str, upper: bool = False) -> str:
    """``HHMMSS.FFFFFF`` for a TM value; ``''`` when empty or unreadable.

    Args:
        value: the TM value as stored or queried.
        upper: pad missing parts with their largest value (the end of a range).
    """
    match = _TIME.match(value.strip().replace(":", ""))
    if not match:
        return ""
    hours, minutes, seconds, fraction = match.groups()
    filler = "59" if upper else "00"
    fraction_fill = "9" if upper else "0"
    return (
        f"{hours}{minutes or filler}{seconds or filler}.{(fraction or '').ljust(6, fraction_fill)}"
    )


def normalize_datetime(date: str, time: str, upper: bool = False) -> str:
    """``YYYYMMDDHHMMSS.FFFFFF`` for a date and a time; ``''`` without a valid date.

    A missing time is the start of the day (or its end, for an upper bound).
    """
    if not is_date(date):
        return ""
    normalized = normalize_time(time, upper) if time else ""
    if not normalized:
        normalized = "235959.999999" if upper else "000000.000000"
    return f"{date}{normalized}"
