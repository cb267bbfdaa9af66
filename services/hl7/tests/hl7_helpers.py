"""Helpers of the hl7 tests: HL7 v2 messages built field by field, peers' MLLP tools."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment with ``fields`` (1-based HL7 positions) set, the others empty."""
    if not fields:
        return name
    values = [""] * max(fields)
    for position, value in fields.items():
        values[position - 1] = value
    if name == "MSH":  # MSH-1 is the field separator itself
        return "MSH|" + "|".join(values[1:])
    return name + "|" + "|".join(values)


def msh(
    message_type: str, control_id: str, version: str = "2.3.1", facility: str = "RADIOLOGY"
) -> str:
    """An MSH segment from the RIS."""
    return segment(
        "MSH",
        {
            1: "|",
            2: "^~\\&",
            3: "RIS",
            4: facility,
            5: "CLOUDPACS",
            6: "CLOUDPACS",
            7: "20261130120000",
            9: message_type,
            10: control_id,
            11: "P",
            12: version,
        },
    )


def pid(patient_id: str, name: str = "DOE^JANE", birth: str = "19800101", sex: str = "F") -> str:
    """A PID segment (issuer HOSP)."""
    return segment("PID", {1: "1", 3: f"{patient_id}^^^HOSP", 5: name, 7: birth, 8: sex})


def orm(
    patient_id: str,
    accession: str,
    *,
    control: str = "NW",
    station: str = "AA2",
    modality: str = "CT",
    start: str = "20261130093000",
    control_id: str | None = None,
    study_uid: str = "",
    name: str = "DOE^JANE",
) -> str:
    """An ORM^O01 (v2.3.1, IHE RAD-4 fields) for one scheduled step."""
    order = f"PO{accession}"
    segments = [
        msh("ORM^O01", control_id or uuid.uuid4().hex[:20]),
        pid(patient_id, name),
        segment("PV1", {1: "1", 2: "O", 8: "123^REFER^RICH"}),
        segment("ORC", {1: control, 2: order, 3: f"FO{accession}", 5: "SC"}),
        segment(
            "OBR",
            {
                1: "1",
                2: order,
                3: f"FO{accession}",
                4: "CTCHEST^CT Chest^LOCAL",
                18: accession,
                19: f"RP{accession}",
                20: f"SPS{accession}",
                21: station,
                24: modality,
                27: f"^^^{start}",
                34: "T1^TECH^TOM",
            },
        ),
    ]
    if study_uid:
        segments.append(segment("ZDS", {1: f"{study_uid}^^Application^DICOM"}))
    return "\r".join(segments) + "\r"


def adt(
    trigger: str, patient_id: str, name: str, control_id: str | None = None, mrg: str = ""
) -> str:
    """An ADT message (A01/A04/A08/A31; A40 with ``mrg``: the prior patient ID)."""
    segments = [
        msh(f"ADT^{trigger}", control_id or uuid.uuid4().hex[:20], version="2.5"),
        segment("EVN", {1: trigger, 2: "20261130120000"}),
        pid(patient_id, name),
    ]
    if mrg:
        segments.append(segment("MRG", {1: f"{mrg}^^^HOSP"}))
    segments.append(segment("PV1", {1: "1", 2: "O"}))
    return "\r".join(segments) + "\r"


async def mllp_send(port: int, message: str, tmp: Path) -> str:
    """Send ``message`` with python-hl7's ``mllp_send`` command (a peer we did not write);
    its output: the ACK, segments separated by CR."""
    path = tmp / f"msg-{uuid.uuid4().hex[:8]}.hl7"
    path.write_bytes(b"\x0b" + message.encode() + b"\x1c\r")  # MLLP frames, as it reads
    tool = shutil.which("mllp_send")
    assert tool is not None, "python-hl7's mllp_send is not installed"
    proc = await asyncio.create_subprocess_exec(
        tool,
        "-p",
        str(port),
        "-f",
        str(path),
        "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def ack_code(ack: str) -> str:
    """MSA-1 of an ACK."""
    for line in ack.replace("\n", "\r").split("\r"):
        if line.startswith("MSA|"):
            return line.split("|")[1]
    raise AssertionError(f"no MSA segment in {ack!r}")
