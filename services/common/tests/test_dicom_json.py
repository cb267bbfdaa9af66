"""The direct DICOM JSON encoder writes exactly what pydicom's ``to_json_dict`` writes, for
every sample file pydicom ships (headers as the indexer reads them, and whole datasets)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pacs_common.dicom_json import BULK_DATA_THRESHOLD, dicom_json
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian

# The files inside the pydicom package only: get_testdata_files() would also try to download
# the external test data, and this machine has no route to it.
SAMPLES = sorted(str(p) for p in (Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))


def _reference(dataset: Dataset) -> dict[str, Any]:
    result: dict[str, Any] = dataset.to_json_dict(
        bulk_data_threshold=BULK_DATA_THRESHOLD, bulk_data_element_handler=lambda _e: ""
    )
    return result


def _readable(path: str, **kwargs: Any) -> Dataset | None:
    try:
        return dcmread(path, **kwargs)
    except (InvalidDicomError, OSError, ValueError, EOFError, NotImplementedError):
        return None


def test_there_are_samples_to_compare() -> None:
    assert len(SAMPLES) > 50


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: Path(p).name)
@pytest.mark.filterwarnings("ignore")
def test_the_same_json_as_pydicom(path: str) -> None:
    for kwargs in ({"stop_before_pixels": True}, {"force": True}):
        dataset = _readable(path, **kwargs)
        if dataset is None:
            continue
        try:
            expected = _reference(dataset)
        except Exception as exc:  # pydicom cannot encode it: neither may we, the same way
            with pytest.raises(type(exc)):
                dicom_json(dataset)
            continue
        assert dicom_json(dataset) == expected


def test_the_same_json_for_every_kind_of_value() -> None:
    """Values the sample files lack: all three PN component groups, several names, empty and
    multi-valued numbers, tags, an empty sequence, inline and bulk binary, private tags."""
    dataset = Dataset()
    dataset.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    dataset.OtherPatientNames = ["DOE^JOHN", "ROE^JANE=ロー"]
    dataset.ReferringPhysicianName = ""
    dataset.PixelSpacing = ["0.5", "0.25"]
    dataset.ImagePositionPatient = ["1", None, "3"]
    dataset.InstanceNumber = "7"
    dataset.ReferencedFrameNumber = ["1", "2"]
    dataset.FrameIncrementPointer = [0x00181063, 0x00181065]
    dataset.DimensionIndexPointer = 0x00209157
    dataset.Rows = 512
    dataset.ReferencedImageSequence = []
    dataset.RedPaletteColorLookupTableData = b"\x00\x01" * 100
    dataset.SpectroscopyData = None
    dataset.add_new(0x00091010, "OB", b"\x01" * 2000)
    dataset.add_new(0x00091011, "LO", "private")
    dataset.StudyDate = ""
    dataset.ImageType = ["ORIGINAL", "PRIMARY"]
    assert dicom_json(dataset) == _reference(dataset)


def _reread(dataset: Dataset) -> Dataset:
    """``dataset`` written as explicit VR little endian and read back: raw elements, as the
    indexer parses headers."""
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    dataset.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


def _values_at_their_edges() -> Dataset:
    dataset = Dataset()
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.PatientName = "Müller^Jürgen=ミュラー^ユルゲン="
    dataset.OtherPatientNames = ["DOE^JOHN ", "ROE^JANE"]
    dataset.add_new(0x00101060, "PN", b"ROE^JANE==\\DOE^JOHN=")  # bytes: kept as they are
    dataset.PatientID = " ID 7 "
    dataset.IssuerOfPatientID = ""
    dataset.StudyDescription = "Kopf\\Hals"  # two LO values
    dataset.ImageComments = "  leading spaces stay, trailing go   "
    dataset.AdditionalPatientHistory = "line one\r\nline two\\not split"  # LT: one value
    dataset.ImageType = ["ORIGINAL", "", "AXIAL"]
    dataset.StudyInstanceUID = "1.2.3"
    dataset.RetrieveAETitle = ["  AE_ONE ", "AE2"]
    dataset.PixelSpacing = [" 0.5", "2.5e-1 "]
    dataset.SliceThickness = "+1.25"
    dataset.InstanceNumber = " +12"
    dataset.SeriesNumber = "007"
    dataset.Rows = 512
    dataset.SmallestImagePixelValue = -5
    dataset.add_new(0x00280106, "SS", -5)
    dataset.add_new(0x00181150, "IS", "")
    dataset.add_new(0x00189087, "FD", [0.1, 2.0])
    dataset.add_new(0x00189088, "FL", 1.5)
    dataset.add_new(0x00091010, "UN", b"\x01\x02\x03")
    dataset.add_new(0x00091011, "LO", "private")
    dataset.StudyDate = ""
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 100"
    item.CodeMeaning = "Schädel"
    item.CodeValue = "T-D1100 "
    dataset.AnatomicRegionSequence = [item]
    return dataset


@pytest.mark.parametrize(
    ("charset", "name", "meaning"),
    [
        ("", "Mueller^Juergen=MUELLER^J=", "Schaedel"),
        ("ISO_IR 100", "Müller^Jürgen=MUELLER^J=", "Schädel"),
        ("ISO_IR 192", "Müller^Jürgen=ミュラー^ユルゲン=", "Schädel"),
        (["ISO 2022 IR 6", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", "Kopf"),
    ],
)
def test_values_read_from_bytes_give_pydicoms_json(
    charset: str | list[str], name: str, meaning: str
) -> None:
    """Headers the indexer parses hold raw elements, decoded here without pydicom's
    conversion: padding, empty members, number strings, names, character sets, items."""
    dataset = _values_at_their_edges()
    dataset.SpecificCharacterSet = charset
    dataset.PatientName = name
    dataset.AnatomicRegionSequence[0].SpecificCharacterSet = "" if not charset else "ISO_IR 100"
    dataset.AnatomicRegionSequence[0].CodeMeaning = meaning
    assert dicom_json(_reread(dataset)) == _reference(_reread(dataset))


def test_most_elements_of_a_header_are_encoded_without_pydicoms_conversion() -> None:
    """pydicom keeps an element raw until something converts it; the encoder leaves most of a
    CT header's elements raw (the speed of the indexer's parse, docs/performance.md)."""
    dataset = _reread(_values_at_their_edges())
    dicom_json(dataset)
    raw = [element for element in dataset.elements() if isinstance(element, RawDataElement)]
    assert len(raw) >= len(dataset) * 3 // 4
