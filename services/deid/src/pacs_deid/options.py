"""The Basic Profile's options (PS3.15 E.3) and their codes in CID 7050 (PS3.16).

Option names are accepted in three spellings: the key used here (``retain_uids``), the words of
the standard (``Retain UIDs``), or the CID 7050 code value (``113110``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pacs_common.errors import InvalidArgumentError


class Option(StrEnum):
    """An option of the Basic Application Level Confidentiality Profile."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONG_FULL_DATES = "retain_long_full_dates"
    RETAIN_LONG_MODIFIED_DATES = "retain_long_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"
    CLEAN_PIXEL_DATA = "clean_pixel_data"


@dataclass(frozen=True)
class Method:
    """A code of CID 7050 "De-identification Method" (coding scheme DCM)."""

    code: str
    meaning: str


BASIC_PROFILE = Method("113100", "Basic Application Confidentiality Profile")

METHODS: dict[Option, Method] = {
    Option.CLEAN_PIXEL_DATA: Method("113101", "Clean Pixel Data Option"),
    Option.CLEAN_GRAPHICS: Method("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: Method("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: Method("113105", "Clean Descriptors Option"),
    Option.RETAIN_LONG_FULL_DATES: Method(
        "113106", "Retain Longitudinal Temporal Information Full Dates Option"
    ),
    Option.RETAIN_LONG_MODIFIED_DATES: Method(
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: Method(
        "113108", "Retain Patient Characteristics Option"
    ),
    Option.RETAIN_DEVICE_IDENTITY: Method("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: Method("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: Method("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: Method("113112", "Retain Institution Identity Option"),
}


def _spellings() -> dict[str, Option]:
    names: dict[str, Option] = {}
    for option in Option:
        method = METHODS[option]
        for spelling in (
            option.value,
            option.value.replace("_", "-"),
            method.code,
            method.meaning,
            method.meaning.removesuffix(" Option"),
            option.value.replace("_", " "),
        ):
            names[spelling.lower()] = option
    return names


_SPELLINGS = _spellings()


def parse_option(name: str) -> Option:
    """The option named ``name``; InvalidArgumentError naming the known ones otherwise."""
    option = _SPELLINGS.get(name.strip().lower())
    if option is None:
        known = ", ".join(o.value for o in Option)
        raise InvalidArgumentError(f"unknown de-identification option {name!r}; known: {known}")
    return option


def parse_options(names: list[str] | tuple[str, ...]) -> frozenset[Option]:
    """A set of options; the two longitudinal-date options exclude each other (PS3.15 E.3.6)."""
    options = frozenset(parse_option(n) for n in names)
    if {Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES} <= options:
        raise InvalidArgumentError(
            "retain_long_full_dates and retain_long_modified_dates exclude each other"
        )
    return options
