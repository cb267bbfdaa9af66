"""Done-when, end to end with peers we did not write: an ORM sent with python-hl7's
``mllp_send`` is in DCMTK ``findscu -W``'s worklist (queries from DCMTK's shipped examples);
an MPPS from pynetdicom's SCU moves the step through IN PROGRESS to COMPLETED."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
from hl7_helpers import ack_code, mllp_send, orm
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

pytestmark = pytest.mark.asyncio(loop_scope="session")

WLISTQRY = Path("/usr/share/doc/dcmtk/examples/wlistqry")
MWL = "1.2.840.10008.5.1.4.31"
MPPS = "1.2.840.10008.3.1.2.3.3"


def _dcmtk(tool: str) -> str:
    path = shutil.which(tool, path="/usr/bin:/usr/local/bin")
    assert path is not None, f"DCMTK {tool} is not installed"
    return path


async def _run(*args: str | Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *[str(a) for a in args],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    # A deadline against a hung tool, not a speed check: the JVM validator alone can take a
    # minute on a loaded 2-core machine.
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    return int(proc.returncode or 0), out.decode(errors="replace")


async def findscu_worklist(
    port: int, query_dump: Path, out_dir: Path, *keys: str, within_s: float = 60
) -> list[Dataset]:
    """``findscu -W`` with a DCMTK example query (converted by dump2dcm), extra ``-k`` keys;
    the response identifiers. A C-FIND that does not end in Success (for example 0xA700 while
    the loaded machine starves the index) is retried as a modality would, for ``within_s``;
    the test fails with findscu's output if it never succeeds."""
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    query = out_dir / "query.dcm"
    code, out = await _run(_dcmtk("dump2dcm"), query_dump, query)
    assert code == 0, out
    args: list[str] = []
    for key in keys:
        args += ["-k", key]
    deadline = time.monotonic() + within_s
    for attempt in range(1000):
        answers = out_dir / f"try{attempt}"
        await asyncio.to_thread(answers.mkdir)
        code, out = await _run(
            _dcmtk("findscu"),
            "-v",
            "-W",
            "-aet",
            "MODALITY",
            "-aec",
            "CLOUDPACS",
            *args,
            "-X",
            "-od",
            answers,
            "127.0.0.1",
            str(port),
            query,
        )
        assert code == 0, out
        if "Received Final Find Response (Success)" in out:
            return await asyncio.to_thread(_responses, answers)
        assert time.monotonic() < deadline, out
        await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


def _responses(out_dir: Path) -> list[Dataset]:
    return [dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))]


async def _eventually(check, within_s: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def test_orm_from_mllp_send_is_in_findscu_worklist(
    start_hl7, gateway_factory, tenant: str, tmp_path: Path
) -> None:
    hl7 = await start_hl7(default_tenant=tenant)
    gateway = await gateway_factory(default_tenant=tenant)
    accession = uuid.uuid4().hex[:10].upper()
    study_uid = generate_uid()
    ack = await mllp_send(
        hl7.mllp_port, orm("PAT-W1", accession, station="AA2", study_uid=study_uid), tmp_path
    )
    assert ack_code(ack) == "AA", ack

    calls = iter(range(1000))

    async def listed() -> list[Dataset]:
        out = tmp_path / f"q{next(calls)}"
        found = await findscu_worklist(gateway.dicom_port, WLISTQRY / "wlistqry6.dump", out)
        return [d for d in found if d.ScheduledProcedureStepSequence[0].Modality == "CT"]

    found = await _eventually(listed)
    assert len(found) == 1, "the ORM's step is not in the worklist"
    item = found[0]
    # wlistqry6 asks for PatientName and, in the step, Modality and Scheduled Station AE Title
    assert str(item.PatientName) == "DOE^JANE"
    step = item.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == "AA2"
    assert "AccessionNumber" not in item  # not asked for: not returned (PS3.4 C.2.2.1.3)

    # wlistqry1 asks for the requested procedure and patient keys (and the whole step item)
    broad = await findscu_worklist(
        gateway.dicom_port,
        WLISTQRY / "wlistqry1.dump",
        tmp_path / "broad",
        f"AccessionNumber={accession}",
    )
    assert len(broad) == 1
    assert broad[0].StudyInstanceUID == study_uid
    assert broad[0].RequestedProcedureID == f"RP{accession}"
    assert broad[0].PatientID == "PAT-W1"
    assert str(broad[0].RequestedProcedureDescription) == "CT Chest"
    whole_step = broad[0].ScheduledProcedureStepSequence[0]
    assert whole_step.ScheduledProcedureStepID == f"SPS{accession}"
    assert whole_step.ScheduledProcedureStepStartDate == "20261130"
    assert whole_step.ScheduledProcedureStepStatus == "SCHEDULED"

    # date range and another station: no match
    none = await findscu_worklist(
        gateway.dicom_port,
        WLISTQRY / "wlistqry6.dump",
        tmp_path / "none",
        "(0040,0100)[0].(0040,0001)=OTHERAE",
    )
    assert none == []
    ranged = await findscu_worklist(
        gateway.dicom_port,
        WLISTQRY / "wlistqry6.dump",
        tmp_path / "range",
        "(0040,0100)[0].(0040,0002)=20261129-20261201",
        "(0040,0100)[0].(0040,0003)=0900-1000",
    )
    assert len(ranged) == 1


async def test_other_tenant_sees_no_worklist(
    start_hl7, gateway_factory, tenant: str, tmp_path: Path
) -> None:
    hl7 = await start_hl7(default_tenant=tenant)
    ours = await gateway_factory(default_tenant=tenant)
    theirs = await gateway_factory(default_tenant=f"{tenant}x")
    accession = uuid.uuid4().hex[:10].upper()
    ack = await mllp_send(hl7.mllp_port, orm("PAT-T1", accession), tmp_path)
    assert ack_code(ack) == "AA"
    keys = (f"AccessionNumber={accession}",)
    ours_found = await _eventually(
        lambda: findscu_worklist(
            ours.dicom_port, WLISTQRY / "wlistqry1.dump", tmp_path / uuid.uuid4().hex, *keys
        )
    )
    assert len(ours_found) == 1
    assert (
        await findscu_worklist(
            theirs.dicom_port, WLISTQRY / "wlistqry1.dump", tmp_path / "theirs", *keys
        )
        == []
    )


def _mpps_scu(port: int, uid: str, create: Dataset | None, changes: Dataset | None) -> int:
    """pynetdicom as the modality's MPPS SCU; the status of the one operation."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MPPS)
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        if create is not None:
            status, _ = assoc.send_n_create(create, MPPS, uid)
        else:
            status, _ = assoc.send_n_set(changes, MPPS, uid)
        return int(status.Status)
    finally:
        assoc.release()


def _mwl_status(port: int, accession: str) -> list[str]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDPACS")
    assert assoc.is_established
    query = Dataset()
    query.AccessionNumber = accession
    step = Dataset()
    step.ScheduledProcedureStepStatus = "COMPLETED"
    query.ScheduledProcedureStepSequence = [step]
    try:
        return [
            str(identifier.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus)
            for status, identifier in assoc.send_c_find(query, MWL)
            if status and status.Status in (0xFF00, 0xFF01)
        ]
    finally:
        assoc.release()


async def test_mpps_from_pynetdicom_completes_the_step(
    start_hl7, gateway_factory, tenant: str, tmp_path: Path
) -> None:
    hl7 = await start_hl7(default_tenant=tenant)
    gateway = await gateway_factory(default_tenant=tenant)
    accession = uuid.uuid4().hex[:10].upper()
    study_uid = generate_uid()
    assert (
        ack_code(
            await mllp_send(hl7.mllp_port, orm("PAT-M1", accession, study_uid=study_uid), tmp_path)
        )
        == "AA"
    )
    listed = await _eventually(
        lambda: findscu_worklist(
            gateway.dicom_port,
            WLISTQRY / "wlistqry1.dump",
            tmp_path / uuid.uuid4().hex,
            f"AccessionNumber={accession}",
        )
    )
    assert len(listed) == 1

    mpps_uid = generate_uid()
    create = Dataset()
    create.PerformedProcedureStepStatus = "IN PROGRESS"
    create.PatientID = "PAT-M1"
    create.PerformedProcedureStepID = "PPS1"
    create.PerformedStationAETitle = "MODALITY"
    create.PerformedProcedureStepStartDate = "20261130"
    create.PerformedProcedureStepStartTime = "093500"
    create.Modality = "CT"
    scheduled = Dataset()
    scheduled.AccessionNumber = accession
    scheduled.ScheduledProcedureStepID = f"SPS{accession}"
    scheduled.StudyInstanceUID = study_uid
    create.ScheduledStepAttributesSequence = [scheduled]
    create.PerformedSeriesSequence = []
    assert await asyncio.to_thread(_mpps_scu, gateway.dicom_port, mpps_uid, create, None) == 0
    # the same UID again: Duplicate SOP Instance (PS3.4 F.7.2.1.2)
    assert await asyncio.to_thread(_mpps_scu, gateway.dicom_port, mpps_uid, create, None) == 0x0111
    # a started step leaves the scheduled worklist
    assert (
        await findscu_worklist(
            gateway.dicom_port,
            WLISTQRY / "wlistqry1.dump",
            tmp_path / "started",
            f"AccessionNumber={accession}",
        )
        == []
    )

    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedProcedureStepEndDate = "20261130"
    done.PerformedProcedureStepEndTime = "094500"
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    image = Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    image.ReferencedSOPInstanceUID = generate_uid()
    series.ReferencedImageSequence = [image]
    done.PerformedSeriesSequence = [series]
    assert await asyncio.to_thread(_mpps_scu, gateway.dicom_port, mpps_uid, None, done) == 0
    assert await asyncio.to_thread(_mwl_status, gateway.dicom_port, accession) == ["COMPLETED"]
    # a completed step can no longer be changed (PS3.4 F.7.2.2.2)
    assert await asyncio.to_thread(_mpps_scu, gateway.dicom_port, mpps_uid, None, done) == 0x0110
    # N-SET of an unknown instance
    assert (
        await asyncio.to_thread(_mpps_scu, gateway.dicom_port, generate_uid(), None, done) == 0x0112
    )


async def test_cancel_and_a_resent_order_keep_their_order(
    start_hl7, gateway_factory, tenant: str, tmp_path: Path
) -> None:
    """NW, then CA, then the NW again with its control ID (the RIS resent it after a lost
    ACK): the resent message is recognised and changes nothing, the step stays cancelled."""
    hl7 = await start_hl7(default_tenant=tenant)
    gateway = await gateway_factory(default_tenant=tenant)
    accession = uuid.uuid4().hex[:10].upper()
    placed = orm("PAT-D1", accession, control_id=f"NW{accession}")
    for message in (placed, orm("PAT-D1", accession, control="CA"), placed):
        assert ack_code(await mllp_send(hl7.mllp_port, message, tmp_path)) == "AA"
    # a marker order sent after them: once it is listed, the three before were applied
    marker = uuid.uuid4().hex[:10].upper()
    assert ack_code(await mllp_send(hl7.mllp_port, orm("PAT-D1", marker), tmp_path)) == "AA"
    calls = iter(range(1000))

    async def marker_listed() -> list[Dataset]:
        return await findscu_worklist(
            gateway.dicom_port,
            WLISTQRY / "wlistqry1.dump",
            tmp_path / f"m{next(calls)}",
            f"AccessionNumber={marker}",
        )

    assert len(await _eventually(marker_listed)) == 1
    assert (
        await findscu_worklist(
            gateway.dicom_port,
            WLISTQRY / "wlistqry1.dump",
            tmp_path / "cancelled",
            f"AccessionNumber={accession}",
        )
        == []
    )
