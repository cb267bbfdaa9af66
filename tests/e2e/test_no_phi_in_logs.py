"""No patient data in what the services write: a full round trip with identifiers that occur
nowhere else (stored, found, retrieved, refused), then every log line of every service process
is searched for them.

What counts as patient data is decided in :mod:`pacs_common.logging`: names, patient and
accession identifiers, birth dates and the study, series and instance UIDs.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.e2e.e2e_support import RunningStack, findscu, run_dcmtk

pytestmark = pytest.mark.e2e


def _identifiers() -> dict[str, str]:
    token = uuid.uuid4().hex[:10].upper()
    return {
        "PatientName": f"PHISENTINEL^{token}",
        "PatientID": f"PID{token}",
        "AccessionNumber": f"ACC{token[:8]}",
        "PatientBirthDate": "19070311",
        "StudyInstanceUID": generate_uid(),
        "SeriesInstanceUID": generate_uid(),
        "SOPInstanceUID": generate_uid(),
    }


def _write_instance(path: Path, identifiers: dict[str, str]) -> None:
    dataset = dcmread(get_testdata_file("CT_small.dcm"))
    for keyword, value in identifiers.items():
        setattr(dataset, keyword, value)
    dataset.file_meta.MediaStorageSOPInstanceUID = identifiers["SOPInstanceUID"]
    dataset.save_as(path, enforce_file_format=True)


def _write_refused_instance(path: Path, identifiers: dict[str, str]) -> None:
    """The same patient, but an instance UID the gateway must refuse (PS3.5 9.1: digits and
    dots only), so that the failure path logs too."""
    dataset = dcmread(get_testdata_file("CT_small.dcm"))
    for keyword, value in identifiers.items():
        setattr(dataset, keyword, value)
    dataset.SOPInstanceUID = f"{identifiers['SeriesInstanceUID']}.X1"
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.save_as(path, enforce_file_format=True)


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")  # the refused UID, on purpose
def test_no_identifier_sent_reaches_any_service_log(
    e2e_stack: RunningStack, tmp_path: Path
) -> None:
    identifiers = _identifiers()
    good, refused = tmp_path / "good.dcm", tmp_path / "refused.dcm"
    _write_instance(good, identifiers)
    _write_refused_instance(refused, identifiers)
    endpoint = ["127.0.0.1", str(e2e_stack.dicom_port)]

    stored = run_dcmtk(["storescu", "-aec", e2e_stack.ae_title, *endpoint, str(good)])
    assert stored.returncode == 0, stored.stdout + stored.stderr
    run_dcmtk(["storescu", "-aec", e2e_stack.ae_title, *endpoint, str(refused)])

    # Queries on each identifier (the index is eventually consistent: wait for the study).
    found = []
    for _ in range(100):
        found = findscu(
            e2e_stack,
            tmp_path / "find",
            "QueryRetrieveLevel=STUDY",
            f"PatientID={identifiers['PatientID']}",
            f"PatientName={identifiers['PatientName'][:14]}*",
            f"AccessionNumber={identifiers['AccessionNumber']}",
            "StudyInstanceUID",
        )
        if found:
            break
    assert [d.StudyInstanceUID for d in found] == [identifiers["StudyInstanceUID"]]
    retrieved = run_dcmtk(
        [
            "getscu",
            "-S",
            "-aec",
            e2e_stack.ae_title,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={identifiers['StudyInstanceUID']}",
            "-od",
            str(tmp_path),
            *endpoint,
        ]
    )
    assert retrieved.returncode == 0, retrieved.stdout + retrieved.stderr

    e2e_stack.stack.stop()  # flushes and closes every log
    logs = sorted(p for p in e2e_stack.run_dir.rglob("*") if p.is_file() and p.suffix == ".log")
    assert logs, f"no service logs under {e2e_stack.run_dir}"
    written = "\n".join(p.read_text(errors="replace") for p in logs)
    assert "instance" in written or "started" in written  # the logs are the services' own
    leaks = {k: v for k, v in identifiers.items() if v in written}
    assert not leaks, f"patient data in service logs: {sorted(leaks)}"
