"""Done-when: an A40 merge sent with ``mllp_send`` moves the stored studies to the surviving
patient, as DCMTK ``findscu`` (Study Root C-FIND) shows; an A08 corrects demographics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pydicom
import pytest
from hl7_helpers import ack_code, adt, mllp_send
from pydicom.uid import generate_uid
from pynetdicom import AE
from test_hl7_worklist_e2e import _dcmtk, _run

pytestmark = pytest.mark.asyncio(loop_scope="session")

CT = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def _store(port: int, patient_id: str, name: str) -> str:
    """C-STORE one CT as a new study of ``patient_id`` (pynetdicom); its Study Instance UID."""
    dataset = pydicom.dcmread(CT)
    dataset.PatientID = patient_id
    dataset.IssuerOfPatientID = "HOSP"
    dataset.PatientName = name
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dataset)
        assert status.Status == 0
    finally:
        assoc.release()
    return str(dataset.StudyInstanceUID)


def _responses(out: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


async def _studies_of(port: int, patient_id: str, out: Path) -> dict[str, str]:
    """Study Instance UID -> Patient's Name of ``patient_id``'s studies, by DCMTK findscu
    (a C-FIND not ending in Success is retried for a minute, as a workstation would)."""
    deadline = time.monotonic() + 60
    for attempt in range(1000):
        answers = out / f"try{attempt}"
        await asyncio.to_thread(answers.mkdir, parents=True)
        code, text = await _run(
            _dcmtk("findscu"),
            "-v",
            "-S",
            "-aet",
            "MODALITY",
            "-aec",
            "CLOUDPACS",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"PatientID={patient_id}",
            "-k",
            "StudyInstanceUID",
            "-k",
            "PatientName",
            "-X",
            "-od",
            answers,
            "127.0.0.1",
            str(port),
        )
        assert code == 0, text
        if "Received Final Find Response (Success)" in text:
            found = await asyncio.to_thread(_responses, answers)
            return {str(d.StudyInstanceUID): str(d.PatientName) for d in found}
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def _until(check, within_s: float = 90):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def test_a40_merge_moves_stored_studies_to_the_surviving_patient(
    start_hl7, gateway_factory, tenant: str, tmp_path: Path
) -> None:
    hl7 = await start_hl7(default_tenant=tenant)
    gateway = await gateway_factory(default_tenant=tenant)
    port = gateway.dicom_port
    old = await asyncio.to_thread(_store, port, "PAT-OLD", "SMITH^JO")
    kept = await asyncio.to_thread(_store, port, "PAT-NEW", "SMITH^JOANNA")
    calls = iter(range(1000))

    async def both_indexed() -> bool:
        a = await _studies_of(port, "PAT-OLD", tmp_path / f"a{next(calls)}")
        b = await _studies_of(port, "PAT-NEW", tmp_path / f"b{next(calls)}")
        return old in a and kept in b

    assert await _until(both_indexed)

    merge = adt("A40", "PAT-NEW", "SMITH^JOANNA^M", mrg="PAT-OLD")
    ack = await mllp_send(hl7.mllp_port, merge, tmp_path)
    assert ack_code(ack) == "AA", ack

    async def merged() -> dict[str, str]:
        found = await _studies_of(port, "PAT-NEW", tmp_path / f"m{next(calls)}")
        return found if old in found else {}

    found = await _until(merged)
    assert set(found) == {old, kept}
    assert set(found.values()) == {"SMITH^JOANNA^M"}  # the registry's demographics
    assert await _studies_of(port, "PAT-OLD", tmp_path / "gone") == {}

    # the same message again (a lost ACK, resent): harmless
    assert ack_code(await mllp_send(hl7.mllp_port, merge, tmp_path)) == "AA"
    # an image still carrying the old ID arrives later: filed under the surviving patient
    late = await asyncio.to_thread(_store, port, "PAT-OLD", "SMITH^JO")

    async def late_filed() -> dict[str, str]:
        found = await _studies_of(port, "PAT-NEW", tmp_path / f"l{next(calls)}")
        return found if late in found else {}

    assert set(await _until(late_filed)) == {old, kept, late}


async def test_a08_updates_demographics_of_stored_studies(
    start_hl7, gateway_factory, tenant: str, tmp_path: Path
) -> None:
    hl7 = await start_hl7(default_tenant=tenant)
    gateway = await gateway_factory(default_tenant=tenant)
    port = gateway.dicom_port
    study = await asyncio.to_thread(_store, port, "PAT-UPD", "BROWN^AL")
    calls = iter(range(1000))

    async def indexed() -> dict[str, str]:
        return await _studies_of(port, "PAT-UPD", tmp_path / f"i{next(calls)}")

    assert study in await _until(indexed)
    ack = await mllp_send(hl7.mllp_port, adt("A08", "PAT-UPD", "BROWN^ALBERT"), tmp_path)
    assert ack_code(ack) == "AA"

    async def renamed() -> bool:
        found = await _studies_of(port, "PAT-UPD", tmp_path / f"r{next(calls)}")
        return found.get(study) == "BROWN^ALBERT"

    assert await _until(renamed)
