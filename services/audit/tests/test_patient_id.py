"""The Patient ID read for every audited C-STORE is the one pydicom reads, for every sample
file pydicom ships (explicit and implicit VR, sequences of undefined length before the
patient module, big endian and deflated through the fallback)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pacs_common.patient_id import patient_id_of

SAMPLES = sorted(
    path
    for path in (Path(pydicom.__file__).parent / "data" / "test_files").rglob("*")
    if path.is_file() and path.stat().st_size < 20_000_000
)


def _pydicom_patient_id(path: Path) -> str | None:
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None
    return str(dataset.get("PatientID", "") or "")


@pytest.mark.filterwarnings("ignore")
def test_patient_id_matches_pydicom_on_every_sample() -> None:
    compared = 0
    for path in SAMPLES:
        expected = _pydicom_patient_id(path)
        if expected is None:
            continue  # not DICOM pydicom can read
        assert patient_id_of(path.read_bytes()) == expected, path.name
        compared += 1
    assert compared > 100


def test_garbage_and_truncated_objects_have_no_patient_id() -> None:
    ct = (Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm").read_bytes()
    assert patient_id_of(ct) == "1CT1"
    assert patient_id_of(b"not dicom") == ""
    assert patient_id_of(ct[:140]) == ""
