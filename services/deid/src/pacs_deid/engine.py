"""Apply a profile to one dataset: every attribute of PS3.15 Table E.1-1, at every level of
nesting, then the attributes that record what was done (PS3.15 E.1.1, PS3.3 C.7.1.1).

The walk visits every element once. An attribute the table names gets its resolved action
(:mod:`pacs_deid.profile`); a sequence that is kept, dummied or cleaned has its items walked
with the same rules, because the table applies wherever an attribute occurs (E.1.1: "...
including within Sequences"); attributes the table does not name are standard, non-identifying
ones and are kept, their sequences walked too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pydicom import datadict
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from pacs_deid.options import BASIC_PROFILE, METHODS, Option
from pacs_deid.profile import Profile
from pacs_deid.pseudonyms import Pseudonymizer
from pacs_deid.safe_private import SafePrivate
from pacs_deid.values import (
    BINARY_VRS,
    TEXT_VRS,
    clean_text,
    dummy,
    shift_date,
    shift_datetime,
)

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
ISSUER_OF_PATIENT_ID = 0x00100021
# Values gathered before the walk so that "clean" can take them out of free text.
IDENTIFYING_TAGS = (
    0x00100010,  # PatientName
    0x00100020,  # PatientID
    0x00101000,  # OtherPatientIDs
    0x00101001,  # OtherPatientNames
    0x00101060,  # PatientMotherBirthName
    0x00080050,  # AccessionNumber
    0x00080080,  # InstitutionName
    0x00080081,  # InstitutionAddress
    0x00080090,  # ReferringPhysicianName
    0x00081050,  # PerformingPhysicianName
    0x00081060,  # NameOfPhysiciansReadingStudy
    0x00081070,  # OperatorsName
    0x00200010,  # StudyID
    0x00100030,  # PatientBirthDate
    0x00402016,  # PlacerOrderNumberImagingServiceRequest
    0x00402017,  # FillerOrderNumberImagingServiceRequest
)
OVERLAY_DATA_ELEMENT = 0x3000
# Inside a sequence being cleaned, free text and names the table does not name are cleaned too.
CLEANED_IN_SEQUENCES = frozenset({"LO", "LT", "SH", "ST", "UC", "UT", "PN"})

OverlayCleaner = Callable[[Dataset, int], bool]


@dataclass
class Report:
    """What happened to one dataset (counts per resolved action; no values)."""

    actions: Counter[str] = field(default_factory=Counter)
    private_kept: int = 0
    private_removed: int = 0
    date_shift_days: int | None = None
    patient_pseudonym: str = ""
    notes: list[str] = field(default_factory=list)


class Deidentifier:
    """One project's profile, pseudonyms and safe-private list, applied dataset by dataset."""

    def __init__(
        self,
        profile: Profile,
        pseudonyms: Pseudonymizer,
        safe_private: SafePrivate | None = None,
        overlay_cleaner: OverlayCleaner | None = None,
    ) -> None:
        self.profile = profile
        self.pseudonyms = pseudonyms
        self.safe_private = safe_private or SafePrivate()
        self.overlay_cleaner = overlay_cleaner
        self.modified_dates = Option.RETAIN_LONG_MODIFIED_DATES in profile.options
        self.cleans = any(a.code == "C" for a in profile.by_tag.values()) or any(
            a.code == "C" for a in profile.patterns
        )

    def apply(self, ds: Dataset) -> Report:
        """De-identify ``ds`` in place and return what was done."""
        report = Report()
        patient_id = str(ds.get(PATIENT_ID).value or "") if PATIENT_ID in ds else ""
        issuer = str(ds[ISSUER_OF_PATIENT_ID].value or "") if ISSUER_OF_PATIENT_ID in ds else ""
        if not patient_id:
            # No patient ID: the study stands for the patient, so one study keeps one pseudonym.
            patient_id = "study:" + str(ds.get("StudyInstanceUID", ""))
        context = _Context(
            report=report,
            dataset=ds,
            patient_id=patient_id,
            issuer=issuer,
            shift=self.pseudonyms.date_shift_days(patient_id, issuer) if self.modified_dates else 0,
        )
        if self.modified_dates:
            report.date_shift_days = context.shift
        if self.cleans:
            context.identifiers  # noqa: B018 - gathered now, before the walk replaces them
        self._walk(ds, context, top=True)
        self._mark(ds)
        if hasattr(ds, "file_meta"):
            self._file_meta(ds)
            _decode_if_encoding_changes(ds)
        report.patient_pseudonym = self.pseudonyms.patient_id(patient_id, issuer)
        return report

    # -- the walk ------------------------------------------------------------------------

    def _walk(self, ds: Dataset, ctx: _Context, *, top: bool = False) -> None:
        private_blocks: dict[tuple[int, int], str] = {}
        for tag in list(ds.keys()):
            number = int(tag)
            if number & 0x00010000:
                self._private(ds, number, ctx, private_blocks)
                continue
            action = self.profile.action_for(number)
            if action is None:
                # Most attributes: not named by the table. Looked at raw (without decoding the
                # value) unless a sequence's items must be walked or its text cleaned; untouched
                # raw elements are also written back as they came, which is most of the speed.
                vr = _raw_vr(ds, tag)
                if vr == "SQ":
                    self._walk_items(ds[tag], ctx)
                elif ctx.cleaning and vr in CLEANED_IN_SEQUENCES:
                    self._clean(ds, ds[tag], ctx)
                continue
            ctx.report.actions[action.code] += 1
            if action.code == "X":
                del ds[tag]  # removed without decoding its value
                continue
            self._act(ds, ds[tag], action.code, ctx)
        if private_blocks:
            _drop_unused_creators(ds, private_blocks)

    def _walk_items(self, elem: DataElement, ctx: _Context) -> None:
        for item in elem.value or ():
            self._walk(item, ctx)

    def _act(self, ds: Dataset, elem: DataElement, code: str, ctx: _Context) -> None:
        number = int(elem.tag)
        if code == "X":
            del ds[elem.tag]
        elif number in (PATIENT_ID, PATIENT_NAME) and code in ("Z", "D"):
            # Z allows a dummy (E.1-1 key); the keyed pseudonym is that dummy, stable per patient.
            value = (
                self.pseudonyms.patient_id(ctx.patient_id, ctx.issuer)
                if number == PATIENT_ID
                else self.pseudonyms.patient_name(ctx.patient_id, ctx.issuer)
            )
            _replace(ds, elem, value)
        elif code == "Z":
            elem.value = Sequence() if elem.VR == "SQ" else None
        elif code == "D":
            self._dummy(ds, elem, ctx)
        elif code in ("K", "U*"):
            if elem.VR == "SQ":
                self._walk_items(elem, ctx)
        elif code == "U":
            self._uid(ds, elem, ctx)
        elif code == "C":
            self._clean(ds, elem, ctx)
        else:
            raise ValueError(f"unresolved action {code}")

    def _dummy(self, ds: Dataset, elem: DataElement, ctx: _Context) -> None:
        vr = _vr(elem)
        if vr == "SQ":
            # The items may hold free text the table does not name (an SR's TextValue in
            # Content Sequence): a dummy sequence is one empty item, never the original items.
            elem.value = Sequence([Dataset()])
        elif vr == "PN":
            _replace(ds, elem, self.pseudonyms.person_name(str(elem.value or "")))
        elif vr == "UI":
            self._uid(ds, elem, ctx)
        else:
            _replace(ds, elem, dummy(vr))

    def _uid(self, ds: Dataset, elem: DataElement, ctx: _Context) -> None:
        if elem.VR == "SQ":
            self._walk_items(elem, ctx)
            return
        value = elem.value
        if value is None or value == "":
            return
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace").rstrip("\0 ")
        if isinstance(value, MultiValue | list):
            _replace(ds, elem, [self.pseudonyms.uid(str(v)) for v in value], vr="UI")
        else:
            _replace(ds, elem, self.pseudonyms.uid(str(value)), vr="UI")

    def _clean(self, ds: Dataset, elem: DataElement, ctx: _Context) -> None:
        vr = _vr(elem)
        number = int(elem.tag)
        if vr == "SQ":
            # Clean the items, including text the table does not name (PS3.15 E.3.4/E.3.5).
            self._walk_items(elem, replace(ctx, cleaning=True))
        elif vr in ("DA", "DT") and self.modified_dates:
            shift = shift_date if vr == "DA" else shift_datetime
            _map_strings(ds, elem, vr, lambda v: shift(v, ctx.shift))
        elif vr == "AE":
            # An AE title is itself the identifier: cleaned means a keyed stand-in, so that the
            # same system still looks the same across a project's files.
            _map_strings(ds, elem, vr, self.pseudonyms.ae_title)
        elif vr == "TM":
            return  # times carry no identity once the date has moved (as RSNA CTP keeps them)
        elif vr == "PN":
            _map_strings(ds, elem, vr, self.pseudonyms.person_name)
        elif vr in TEXT_VRS:
            _map_strings(ds, elem, vr, lambda v: clean_text(v, ctx.identifiers))
        elif (number >> 24) == 0x60 and (number & 0xFFFF) == OVERLAY_DATA_ELEMENT:
            if self.overlay_cleaner is None or not self.overlay_cleaner(ds, number >> 16):
                del ds[elem.tag]
                ctx.report.notes.append("overlay removed: no cleaner")
        elif vr in BINARY_VRS:
            del ds[elem.tag]  # bytes of unknown meaning cannot be cleaned, only removed

    # -- private attributes (PS3.15 E.3.10) --------------------------------------------

    def _private(
        self, ds: Dataset, number: int, ctx: _Context, blocks: dict[tuple[int, int], str]
    ) -> None:
        group, element = number >> 16, number & 0xFFFF
        if 0x0010 <= element <= 0x00FF:  # a private creator: decided after its block
            blocks[(group, element)] = str(ds[number].value or "")
            return
        if self.profile.private.code == "C":
            creator_tag = (group << 16) | (element >> 8)
            creator = str(ds[creator_tag].value).strip() if creator_tag in ds else ""
            if self.safe_private.is_safe(ds, creator, group, element & 0xFF):
                ctx.report.private_kept += 1
                return
        del ds[number]
        ctx.report.private_removed += 1

    # -- what the result says about itself ---------------------------------------------

    def _mark(self, ds: Dataset) -> None:
        options = sorted(self.profile.options, key=lambda o: METHODS[o].code)
        methods = [BASIC_PROFILE, *(METHODS[o] for o in options)]
        ds.PatientIdentityRemoved = "YES"
        previous = list(ds.get("DeidentificationMethod", []) or [])
        if isinstance(previous, str):
            previous = [previous]
        ds.DeidentificationMethod = [*previous, *(m.meaning for m in methods)]
        items = list(ds.get("DeidentificationMethodCodeSequence", []) or [])
        for method in methods:
            item = Dataset()
            item.CodeValue = method.code
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = method.meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if Option.RETAIN_LONG_FULL_DATES in self.profile.options:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif self.modified_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"

    def _file_meta(self, ds: Dataset) -> None:
        meta: FileMetaDataset = ds.file_meta
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        elif "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = UID(
                self.pseudonyms.uid(meta.MediaStorageSOPInstanceUID)
            )
        for tag in (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102):
            # Source/Sending/Receiving AE titles and private file meta name other systems.
            if tag in meta:
                del meta[tag]


@dataclass
class _Context:
    report: Report
    dataset: Dataset
    patient_id: str
    issuer: str
    shift: int
    cleaning: bool = False
    _identifiers: list[str] | None = None

    @property
    def identifiers(self) -> list[str]:
        """The top-level dataset's identifying values, gathered before the walk changes them
        (only when something is cleaned: most profiles never need them)."""
        if self._identifiers is None:
            self._identifiers = _identifiers(self.dataset)
        return self._identifiers


def _identifiers(ds: Dataset) -> list[str]:
    found: list[str] = []
    for tag in IDENTIFYING_TAGS:
        if tag not in ds:
            continue
        value = ds[tag].value
        values = value if isinstance(value, MultiValue | list) else [value]
        for v in values:
            text = str(v or "").strip()
            if not text:
                continue
            found.append(text)
            if ds[tag].VR == "PN":
                found.extend(p for p in text.replace("=", "^").split("^") if len(p) >= 3)
    return sorted(set(found), key=len, reverse=True)


def _decode_if_encoding_changes(ds: Dataset) -> None:
    """Decode every element when the data was read as implicit VR but will be written as
    explicit VR (a file whose meta names the wrong transfer syntax): raw elements left
    undecoded by the walk have no VR to write otherwise."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and syntax.is_implicit_VR:
        return
    if any((raw := ds.get_item(tag)) is not None and raw.VR is None for tag in ds.keys()):  # noqa: SIM118 - keys() avoids decoding every element
        for _ in ds.iterall():
            pass


def _raw_vr(ds: Dataset, tag: BaseTag) -> str | None:
    """An element's VR without decoding its value (the dictionary's for implicit VR)."""
    raw = ds.get_item(tag)
    vr = raw.VR if raw is not None else None
    if vr is None or vr == "UN":
        if datadict.dictionary_has_tag(tag):
            return str(datadict.dictionary_VR(tag))
        return vr
    return str(vr)


def _vr(elem: DataElement) -> str:
    if elem.VR in ("UN", "OB or OW", "US or SS") and datadict.dictionary_has_tag(elem.tag):
        return str(datadict.dictionary_VR(elem.tag)).split(" ")[0]
    return str(elem.VR)


def _replace(ds: Dataset, elem: DataElement, value: object, vr: str | None = None) -> None:
    """Set a new value, re-creating the element when its VR was unknown (implicit VR files
    give UN for tags pydicom's dictionary lacks, and a UN value must be bytes)."""
    target_vr = vr or _vr(elem)
    if target_vr != elem.VR:
        ds[elem.tag] = DataElement(BaseTag(elem.tag), target_vr, value)
    else:
        elem.value = value


def _map_strings(ds: Dataset, elem: DataElement, vr: str, fn: Callable[[str], str]) -> None:
    value = elem.value
    if value is None:
        return
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, MultiValue | list):
        _replace(ds, elem, [fn(str(v)) for v in value], vr=vr)
    else:
        _replace(ds, elem, fn(str(value)), vr=vr)


def _drop_unused_creators(ds: Dataset, blocks: dict[tuple[int, int], str]) -> None:
    """Remove private creator elements whose block lost every element."""
    for group, block in blocks:
        low, high = (group << 16) | (block << 8), (group << 16) | (block << 8) | 0xFF
        if not any(low <= int(tag) <= high for tag in list(ds.keys())):
            del ds[(group << 16) | block]
