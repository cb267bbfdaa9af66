"""Replacement values per VR: dummies (action D), empty values (Z), cleaned text (C) and
shifted dates (C under Retain Longitudinal Temporal Information with Modified Dates).

A dummy must be "consistent with the VR" (PS3.15 E.1-1 key, action D): each is a valid value of
its VR (PS3.5 6.2) that carries no information.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

DUMMIES: dict[str, object] = {
    "AE": "DEIDENTIFIED",
    "AS": "000D",
    "CS": "DEIDENTIFIED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "FL": 0.0,
    "FD": 0.0,
    "IS": "0",
    "LO": "DEIDENTIFIED",
    "LT": "DEIDENTIFIED",
    "OB": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "OW": b"\x00\x00",
    "SH": "DEIDENTIFIED",
    "SL": 0,
    "SS": 0,
    "ST": "DEIDENTIFIED",
    "SV": 0,
    "TM": "000000",
    "UC": "DEIDENTIFIED",
    "UL": 0,
    "UN": b"\x00\x00",
    "UR": "http://deidentified.invalid",
    "US": 0,
    "UT": "DEIDENTIFIED",
    "UV": 0,
}

TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT", "PN", "CS", "AE"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

_DATE_LIKE = re.compile(
    r"\b(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|\d{8})\b"
)
_LONG_NUMBER = re.compile(r"\b\d{6,}\b")
MASK = "***"


def dummy(vr: str) -> object:
    """A non-empty value of ``vr`` that carries nothing."""
    return DUMMIES.get(vr, "DEIDENTIFIED")


def clean_text(text: str, identifiers: list[str]) -> str:
    """``text`` without the dataset's known identifiers, dates or long numbers.

    This is what "clean" (action C, PS3.15 E.3.5) can do without understanding the text: take
    out every value the profile removes elsewhere in the same dataset (names, IDs, accession
    and order numbers, institution) and anything shaped like a date or a record number. It
    cannot find identifiers it was not told about, such as a name the dataset never names.
    """
    cleaned = text
    for identifier in identifiers:
        if identifier and len(identifier) >= 3:
            cleaned = re.sub(re.escape(identifier), MASK, cleaned, flags=re.IGNORECASE)
    cleaned = _DATE_LIKE.sub(MASK, cleaned)
    return _LONG_NUMBER.sub(MASK, cleaned)


def shift_date(value: str, days: int) -> str:
    """A DA value (``YYYYMMDD``) moved by ``days``; a value that is no valid date is emptied
    rather than kept (it may still be a date in another shape)."""
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""
    try:
        moved = date(int(text[:4]), int(text[4:6]), int(text[6:8])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return ""
    return moved.strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str:
    """A DT value with its date part moved by ``days`` (time and offset kept)."""
    text = value.strip()
    if len(text) < 8:
        return ""
    moved = shift_date(text[:8], days)
    return moved + text[8:] if moved else ""
