"""Generated datasets that carry an identifying value in every place Table E.1-1 names: each
attribute at top level and again inside an item of a sequence the table does not name, plus
private blocks, overlays, curves and SR content."""

from __future__ import annotations

from pacs_deid.table import load_table
from pydicom import datadict
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

# A sequence Table E.1-1 does not name, so that its items are only walked.
CARRIER_SEQUENCE = "ReferencedSeriesSequence"
SECRET = "SECRET"


def sample_value(tag: int, vr: str) -> object:
    """An identifying-looking value valid for ``vr``."""
    values: dict[str, object] = {
        "AE": "SECRETAE",
        "AS": "045Y",
        "AT": 0x00100010,
        "CS": "SECRET",
        "DA": "20200102",
        "DS": "12.5",
        "DT": "20200102101010",
        "FL": 1.5,
        "FD": 1.5,
        "IS": "42",
        "LO": "SECRET LO Doe",
        "LT": "SECRET LT Doe",
        "OB": b"SECRET!!",
        "OW": b"SECRET!!",
        "OF": b"SECRET!!",
        "OD": b"SECRET!!",
        "OL": b"SECRET!!",
        "OV": b"SECRET!!",
        "PN": "Doe^John",
        "SH": "SECRET SH",
        "SL": 7,
        "SS": 7,
        "ST": "SECRET ST Doe",
        "SV": 7,
        "TM": "101010",
        "UC": "SECRET UC",
        "UI": f"1.2.826.0.1.3680043.2.1125.{tag}",
        "UL": 7,
        "UN": b"SECRET!!",
        "UR": "http://secret.example/doe",
        "US": 7,
        "UT": "SECRET UT Doe",
        "UV": 7,
    }
    return values[vr]


def vr_of(tag: int) -> str:
    """The dictionary VR (the first of ``US or SS`` and the like), LO for tags newer than
    pydicom's dictionary."""
    if datadict.dictionary_has_tag(tag):
        return str(datadict.dictionary_VR(tag)).split(" ")[0]
    return "LO"


def inner_item() -> Dataset:
    item = Dataset()
    item.PatientComments = "SECRET inner Doe"  # X in the Basic Profile
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.99"  # U
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # not in the table: kept
    return item


def add_attribute(ds: Dataset, tag: int) -> None:
    vr = vr_of(tag)
    if vr == "SQ":
        ds.add_new(tag, "SQ", Sequence([inner_item()]))
    else:
        ds.add_new(tag, vr, sample_value(tag, vr))


def table_dataset() -> Dataset:
    """Every single-tag row at top level and inside the carrier sequence."""
    table = load_table()
    ds = Dataset()
    nested = Dataset()
    for tag in table.by_tag:
        if (tag >> 16) == 0x0002 or tag in (0x00000000,):
            continue  # file meta and command group are not dataset attributes
        add_attribute(ds, tag)
        add_attribute(nested, tag)
    ds.add_new(datadict.tag_for_keyword(CARRIER_SEQUENCE), "SQ", Sequence([nested]))
    ds.Modality = "OT"
    add_private(ds)
    add_overlay_and_curve(ds)
    return ds


def add_private(ds: Dataset) -> None:
    block = ds.private_block(0x0009, "ACME SECRET", create=True)
    block.add_new(0x01, "LO", "SECRET private Doe")
    block.add_new(0x02, "DS", "1.0")
    safe = ds.private_block(0x0011, "ACME SAFE", create=True)
    safe.add_new(0x01, "DS", "2.5")
    safe.add_new(0x02, "LO", "SECRET mixed Doe")


def declare_mixed_block(ds: Dataset) -> None:
    """Declare in the dataset itself that element 0x01 of "ACME SAFE" is not identifying
    (PS3.3 C.12.1.1.7)."""
    item = Dataset()
    item.PrivateGroupReference = 0x0011
    item.PrivateCreatorReference = "ACME SAFE"
    item.BlockIdentifyingInformationStatus = "MIXED"
    item.NonidentifyingPrivateElements = [0x01]
    ds.PrivateDataElementCharacteristicsSequence = Sequence([item])


def add_overlay_and_curve(ds: Dataset) -> None:
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\xff" * 8)
    ds.add_new(0x60004000, "LT", "SECRET overlay comment")
    ds.add_new(0x50000000 | 0x3000, "OW", b"SECRET!!")


def sr_dataset() -> Dataset:
    """A small SR whose content tree names the patient, a person and dates."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.7.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.7.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.7.3"
    ds.PatientName = "Doe^John"
    ds.PatientID = "MRN12345"
    ds.Modality = "SR"
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.TextValue = "Patient John Doe MRN12345 seen 2020-01-02"
    person = Dataset()
    person.RelationshipType = "HAS OBS CONTEXT"
    person.ValueType = "PNAME"
    person.PersonName = "Smith^Anna"
    when = Dataset()
    when.RelationshipType = "CONTAINS"
    when.ValueType = "DATE"
    when.Date = "20200102"
    ref = Dataset()
    ref.RelationshipType = "CONTAINS"
    ref.ValueType = "UIDREF"
    ref.UID = "1.2.826.0.1.3680043.2.1125.7.9"
    ds.ValueType = "CONTAINER"
    ds.ContentSequence = Sequence([text, person, when, ref])
    return ds


def with_file_meta(ds: Dataset) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "1.2.3.4")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "SECRETAE"
    ds.file_meta = meta
    return ds
