"""Structured reports beyond the header: measurements and a plain-text rendering.

Any SR document (Basic, Enhanced, Comprehensive, Comprehensive 3D; PS3.3 C.17.3 SR Document
Content Module) is a tree of content items. This module walks that tree once with pydicom:

- every NUM item (PS3.3 C.17.3.2.1) becomes a :class:`MeasurementRow` with its concept name,
  numeric value and units, and the context TID 1500 gives it: the measurement group's
  (TID 1501/1410/1411 CONTAINER) Finding Site (SCT 363698007) and Tracking Identifier
  (DCM 112039), and the images it refers to (IMAGE items of the group or of the NUM, also
  under SCOORD items, "selected from");
- :func:`render_text` prints the tree indented, one item a line, the way DCMTK's ``dsrdump``
  lists it, for people and for ORU^R01 OBX-5.

A walker rather than highdicom's TID 1500 parser, because that one accepts only documents
following TID 1500 to the letter (highdicom#352: no template identification, other templates)
while every SR has NUM items worth indexing; highdicom writes the test reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

SR_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
"""Structured Reporting storage SOP classes (PS3.4 B.5: Basic Text SR .11, Enhanced .22,
Comprehensive .33, Comprehensive 3D .34, and the key object selection and CAD ones)."""

_FINDING_SITE = {("SCT", "363698007"), ("SRT", "G-C0E3")}
_TRACKING_ID = {("DCM", "112039")}
_TRACKING_UID = {("DCM", "112040")}


def is_structured_report(dataset: Dataset) -> bool:
    """True for an SR document (by its SOP class)."""
    return str(getattr(dataset, "SOPClassUID", "")).startswith(SR_SOP_CLASS_PREFIX)


@dataclass
class MeasurementRow:
    """One NUM content item with its measurement-group context."""

    ordinal: int
    concept_code_value: str
    concept_code_scheme: str
    concept_code_meaning: str
    value: str
    units_code_value: str = ""
    units_code_meaning: str = ""
    finding_site: str = ""
    tracking_identifier: str = ""
    referenced_sop_instance_uids: list[str] = field(default_factory=list)


def _code(item: Dataset, keyword: str) -> tuple[str, str, str]:
    sequence = item.get(keyword)
    if not sequence:
        return "", "", ""
    code = sequence[0]
    value = str(
        code.get("CodeValue") or code.get("LongCodeValue") or code.get("URNCodeValue") or ""
    )
    return value, str(code.get("CodingSchemeDesignator", "")), str(code.get("CodeMeaning", ""))


def _concept(item: Dataset) -> tuple[str, str, str]:
    return _code(item, "ConceptNameCodeSequence")


def _images(item: Dataset) -> Iterator[str]:
    """SOP Instance UIDs an IMAGE item, or the IMAGE items under a SCOORD, refer to."""
    kind = str(item.get("ValueType", ""))
    if kind in ("IMAGE", "COMPOSITE"):
        for reference in item.get("ReferencedSOPSequence", []):
            uid = str(reference.get("ReferencedSOPInstanceUID", ""))
            if uid:
                yield uid
    if kind in ("SCOORD", "SCOORD3D"):
        for child in item.get("ContentSequence", []):
            yield from _images(child)


@dataclass
class _Context:
    finding_site: str = ""
    tracking_identifier: str = ""
    images: list[str] = field(default_factory=list)


def _context_of(container: Dataset, outer: _Context) -> _Context:
    context = _Context(outer.finding_site, outer.tracking_identifier, list(outer.images))
    for child in container.get("ContentSequence", []):
        value, scheme, _ = _concept(child)
        kind = str(child.get("ValueType", ""))
        if kind == "CODE" and (scheme, value) in _FINDING_SITE:
            context.finding_site = _code(child, "ConceptCodeSequence")[2]
        elif kind in ("TEXT", "UIDREF") and (scheme, value) in _TRACKING_ID | _TRACKING_UID:
            text = str(child.get("TextValue", "") or child.get("UID", ""))
            if (scheme, value) in _TRACKING_ID or not context.tracking_identifier:
                context.tracking_identifier = text
        context.images.extend(_images(child))
    return context


def measurements(dataset: Dataset) -> list[MeasurementRow]:
    """Every NUM item of the document, in content order, with its context."""
    rows: list[MeasurementRow] = []

    def walk(items: Any, context: _Context) -> None:
        for item in items:
            kind = str(item.get("ValueType", ""))
            if kind == "CONTAINER":
                walk(item.get("ContentSequence", []), _context_of(item, context))
            elif kind == "NUM":
                rows.append(_row(item, context, len(rows) + 1))
            elif "ContentSequence" in item:
                walk(item.ContentSequence, context)

    walk(dataset.get("ContentSequence", []), _context_of(dataset, _Context()))
    return rows


def _row(item: Dataset, context: _Context, ordinal: int) -> MeasurementRow:
    concept = _concept(item)
    value, units = "", ("", "", "")
    measured = item.get("MeasuredValueSequence")
    if measured:
        value = str(measured[0].get("NumericValue", "")).strip()
        units = _code(measured[0], "MeasurementUnitsCodeSequence")
    own = _context_of(item, _Context())
    images = own.images or context.images
    return MeasurementRow(
        ordinal=ordinal,
        concept_code_value=concept[0],
        concept_code_scheme=concept[1],
        concept_code_meaning=concept[2],
        value=value,
        units_code_value=units[0],
        units_code_meaning=units[2],
        finding_site=own.finding_site or context.finding_site,
        tracking_identifier=context.tracking_identifier,
        referenced_sop_instance_uids=list(dict.fromkeys(images)),
    )


def title(dataset: Dataset) -> str:
    """The document title: the root content item's concept name meaning."""
    return _concept(dataset)[2]


def render_text(dataset: Dataset) -> str:
    """The content tree as indented text, one content item a line."""
    lines = [f"{title(dataset) or 'Structured Report'}"]
    for label in ("CompletionFlag", "VerificationFlag"):
        if label in dataset:
            lines.append(f"  {label}: {dataset.get(label)}")

    def walk(items: Any, depth: int) -> None:
        for item in items:
            lines.append("  " * depth + _line(item))
            if "ContentSequence" in item:
                walk(item.ContentSequence, depth + 1)

    walk(dataset.get("ContentSequence", []), 1)
    return "\n".join(lines)


def _line(item: Dataset) -> str:
    kind = str(item.get("ValueType", ""))
    relationship = str(item.get("RelationshipType", ""))
    name = _concept(item)[2] or "(no concept name)"
    value = _value(item, kind)
    prefix = f"<{relationship}> " if relationship else ""
    return f"{prefix}{kind}: {name}" + (f" = {value}" if value else "")


_TEXT_VALUES = {
    "TEXT": "TextValue",
    "PNAME": "PersonName",
    "DATE": "Date",
    "TIME": "Time",
    "DATETIME": "DateTime",
    "UIDREF": "UID",
}


def _numeric(item: Dataset) -> str:
    measured = item.get("MeasuredValueSequence")
    if not measured:
        return "(no value)"
    units = _code(measured[0], "MeasurementUnitsCodeSequence")
    return f"{measured[0].get('NumericValue', '')} {units[0]}".strip()


def _value(item: Dataset, kind: str) -> str:
    if kind in _TEXT_VALUES:
        return str(item.get(_TEXT_VALUES[kind], ""))
    if kind == "CODE":
        return _code(item, "ConceptCodeSequence")[2]
    if kind == "NUM":
        return _numeric(item)
    if kind in ("IMAGE", "COMPOSITE"):
        return ", ".join(_images(item))
    if kind in ("SCOORD", "SCOORD3D"):
        return str(item.get("GraphicType", ""))
    return ""
