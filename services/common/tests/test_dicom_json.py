"""The direct DICOM JSON encoder writes exactly what pydicom's ``to_json_dict`` writes, for
every sample file pydicom ships (headers as the indexer reads them, and whole datasets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pacs_common.dicom_json import BULK_DATA_THRESHOLD, dicom_json
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

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
