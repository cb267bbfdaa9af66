"""Every row of PS3.15 Table E.1-1 against the engine, for the Basic Profile and each option:
the attribute is placed in a generated dataset (top level and nested in a sequence the table
does not name), de-identified, and the outcome checked against the action the table gives.

The check reads the table's own action codes (combined ones accept any of their alternatives),
not the engine's resolution, so a wrong resolution fails here.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from deid_identifiers import (
    CARRIER_SEQUENCE,
    add_private,
    declare_mixed_block,
    sample_value,
    sr_dataset,
    table_dataset,
    vr_of,
)
from pacs_common.errors import InvalidArgumentError
from pacs_deid.engine import Deidentifier
from pacs_deid.options import Option, parse_options
from pacs_deid.profile import RETENTION_ORDER, Profile
from pacs_deid.pseudonyms import Pseudonymizer
from pacs_deid.safe_private import SafePrivate
from pacs_deid.table import TableRow, load_table
from pydicom.dataset import Dataset

KEY = b"test-project-key"
TABLE = load_table()
DATE_OPTIONS = (Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES)


def table_action(row: TableRow, options: frozenset[Option]) -> str:
    """The table's code for ``row`` under ``options`` (an option column wins over Basic)."""
    codes = [row.options[o.value] for o in options if o.value in row.options]
    if not codes:
        return row.basic
    return min(codes, key=lambda c: RETENTION_ORDER.index(c.split("/")[0]))


def deidentified(options: frozenset[Option]) -> Dataset:
    ds = table_dataset()
    Deidentifier(Profile(options), Pseudonymizer(KEY)).apply(ds)
    return ds


def outcome_allowed(code: str, tag: int, before: object, ds: Dataset) -> str | None:
    """None when ``ds`` shows ``code`` applied to ``tag``; otherwise what is wrong."""
    alternatives = code.rstrip("*").split("/") if "/" in code else [code]
    present = tag in ds
    value = ds[tag].value if present else None
    vr = vr_of(tag)
    empty = value is None or value == "" or value == b"" or (vr == "SQ" and len(value) == 0)
    for alternative in alternatives:
        if alternative == "X" and not present:
            return None
        if alternative == "Z" and present and (empty or tag in (0x00100010, 0x00100020)):
            return None
        if alternative == "D" and present and not empty and (value != before or vr == "SQ"):
            return None
        if alternative == "U" and present and (vr == "SQ" or str(value).startswith("2.25.")):
            return None
        if alternative == "K" and present and (value == before or vr == "SQ"):
            return None
        if alternative == "C" and not present and vr in BINARY:
            return None  # binary values cannot be cleaned, only removed
        text = str(value).lower()
        if (
            alternative == "C"
            and present
            and vr not in BINARY | {"DA", "DT"}
            and "doe" not in text
            and "john" not in text
        ):
            return None  # cleaned: the dataset's identifiers (the patient is Doe^John) are gone
        if alternative == "C" and vr in ("DA", "DT") and present and value != before:
            return None
    return f"expected {code}, found {'absent' if not present else repr(value)[:60]}"


BINARY = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
OPTION_SETS = [frozenset(), *(frozenset({o}) for o in Option if o != Option.CLEAN_PIXEL_DATA)]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda s: "+".join(sorted(s)) or "basic")
def test_every_row_top_level_and_nested(options: frozenset[Option]) -> None:
    ds = deidentified(options)
    nested = ds[CARRIER_SEQUENCE].value[0]
    wrong: list[str] = []
    for tag, row in TABLE.by_tag.items():
        if (tag >> 16) == 0x0002:
            continue
        code = table_action(row, options)
        before = sample_value(tag, vr_of(tag)) if vr_of(tag) != "SQ" else None
        for where, target in (("top", ds), ("nested", nested)):
            problem = outcome_allowed(code, tag, before, target)
            if problem:
                wrong.append(f"{where} {row.tag} {row.keyword or row.name}: {problem}")
    assert not wrong, f"{len(wrong)} rows wrong:\n" + "\n".join(wrong[:40])


def test_sequence_items_are_walked_under_kept_sequences() -> None:
    ds = deidentified(frozenset({Option.RETAIN_UIDS}))
    # ReferencedImageSequence is K under Retain UIDs: its items are still de-identified.
    item = ds.ReferencedImageSequence[0]
    assert "PatientComments" not in item
    assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"


def test_uids_in_referenced_image_sequence_are_replaced_under_basic() -> None:
    ds = deidentified(frozenset())
    item = ds.ReferencedImageSequence[0]
    assert item.ReferencedSOPInstanceUID.startswith("2.25.")
    assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"


def test_private_attributes_removed_by_basic() -> None:
    ds = deidentified(frozenset())
    assert not [e for e in ds if e.tag.is_private]


def test_retain_safe_private_keeps_only_declared_or_configured() -> None:
    ds = Dataset()
    add_private(ds)
    declare_mixed_block(ds)
    Deidentifier(Profile(parse_options(["retain_safe_private"])), Pseudonymizer(KEY)).apply(ds)
    kept = {(int(e.tag) >> 16, int(e.tag) & 0xFF) for e in ds if e.tag.is_private}
    assert (0x0011, 0x01) in kept  # declared non-identifying in a MIXED block
    assert (0x0011, 0x02) not in kept
    assert not [t for t in kept if t[0] == 0x0009]  # no claim for ACME SECRET: removed
    assert ds.private_block(0x0011, "ACME SAFE")[0x01].value == "2.5"

    configured = Dataset()
    add_private(configured)
    safe = SafePrivate([{"creator": "ACME SECRET", "group": 9, "element": 2}])  # type: ignore[list-item]
    Deidentifier(Profile(parse_options(["113111"])), Pseudonymizer(KEY), safe).apply(configured)
    kept = {int(e.tag) for e in configured if e.tag.is_private}
    assert kept == {0x00090010, 0x00091002}


def test_overlays_and_curves() -> None:
    basic = deidentified(frozenset())
    assert 0x60003000 not in basic and 0x60004000 not in basic and 0x50003000 not in basic
    assert 0x60000010 in basic  # overlay rows/columns are not identifying: kept


def test_markers_name_profile_and_options() -> None:
    options = parse_options(["Retain UIDs", "clean_descriptors", "113107"])
    ds = deidentified(options)
    assert ds.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113107", "113110"]
    assert {i.CodingSchemeDesignator for i in ds.DeidentificationMethodCodeSequence} == {"DCM"}
    assert "Basic Application Confidentiality Profile" in ds.DeidentificationMethod
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert deidentified(frozenset()).LongitudinalTemporalInformationModified == "REMOVED"


def test_modified_dates_shift_by_the_patients_days() -> None:
    ds = Dataset()
    ds.PatientID = "MRN1"
    ds.StudyDate = "20200102"
    ds.AcquisitionDateTime = "20200102101010.5"
    ds.StudyTime = "101010"
    report = Deidentifier(
        Profile(parse_options(["retain_long_modified_dates"])), Pseudonymizer(KEY)
    ).apply(ds)
    days = report.date_shift_days
    assert days is not None and -3500 <= days <= -1700
    expected = (date(2020, 1, 2) + timedelta(days=days)).strftime("%Y%m%d")
    assert ds.StudyDate == expected
    assert ds.AcquisitionDateTime == expected + "101010.5"
    assert ds.StudyTime == "101010"


def test_sr_content_tree() -> None:
    ds = sr_dataset()
    Deidentifier(Profile(frozenset()), Pseudonymizer(KEY)).apply(ds)
    # Content Sequence is D in the Basic Profile: a dummy, never the original items (whose
    # TextValue the table does not name).
    assert len(ds.ContentSequence) == 1 and len(ds.ContentSequence[0]) == 0
    assert not any(s in str(ds) for s in ("Doe", "Smith", "MRN12345", "2020"))

    cleaned = sr_dataset()
    Deidentifier(Profile(parse_options(["clean_structured_content"])), Pseudonymizer(KEY)).apply(
        cleaned
    )
    text, person, when, ref = cleaned.ContentSequence
    assert text.ValueType == "TEXT" and "John" not in text.TextValue
    assert "Doe" not in text.TextValue and "MRN12345" not in text.TextValue
    assert "2020-01-02" not in text.TextValue
    assert "Smith" not in str(person.PersonName)
    assert when.Date != "20200102"
    assert ref.UID.startswith("2.25.")


def test_combined_options_retain_most() -> None:
    ds = deidentified(parse_options(["retain_device_identity", "retain_long_full_dates"]))
    # DateOfLastDetectorCalibration: Retain Device Identity K, Full Dates K.
    assert ds.DateOfLastDetectorCalibration == "20200102"


def test_exclusive_date_options_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        parse_options(["retain_long_full_dates", "retain_long_modified_dates"])
    with pytest.raises(InvalidArgumentError):
        parse_options(["retain_everything"])
