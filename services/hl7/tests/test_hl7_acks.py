"""Every kind of ACK the listener answers, sent with python-hl7's ``mllp_send`` and parsed by
HAPI HL7 v2 (Java, Maven Central) as an independent parser; the ORU^R01 we build, too."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from hl7_helpers import ack_code, adt, mllp_send, msh, orm, pid
from pacs.events.v1 import workflow_events_pb2 as pb
from pacs_hl7.oru import build_oru
from pacs_hl7.settings import Hl7Settings

FETCH = Path(__file__).parent / "hapi" / "fetch_hapi.sh"


@pytest.fixture(scope="session")
def hapi_classpath() -> str:
    """HAPI's jars and the compiled checker (fetched from Maven Central once)."""
    done = subprocess.run([str(FETCH)], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def hapi(classpath: str, messages: list[str], tmp: Path) -> list[str]:
    """HAPI's verdict on each message: ``OK <structure> <MSA-1|PID-3> <ERR code|OBX-5>``."""
    paths = []
    for index, message in enumerate(messages):
        path = tmp / f"hapi-{index}.hl7"
        path.write_text(message.replace("\n", "\r"))
        paths.append(str(path))
    done = subprocess.run(
        ["java", "-cp", classpath, "HapiCheck", *paths],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.stdout.strip().splitlines()


def _ack_text(output: str) -> str:
    """The ACK from mllp_send's output (segments separated by CR)."""
    start = output.find("MSH|")
    assert start >= 0, output
    return output[start:].strip("\r\n\x1c\x0b") + "\r"


@pytest.mark.asyncio(loop_scope="session")
async def test_acks_for_good_bad_and_unsupported_messages(
    start_hl7, hapi_classpath: str, tenant: str, tmp_path: Path
) -> None:
    hl7 = await start_hl7(default_tenant=tenant)
    port = hl7.mllp_port
    no_pid3 = orm("X", "A1").replace("PID|1||X^^^HOSP|", "PID|1|||")
    cases = [
        ("AA", orm("PAT-A1", uuid.uuid4().hex[:8])),  # v2.3.1 ORM
        ("AA", adt("A01", "PAT-A2", "DOE^JOHN")),  # v2.5 ADT
        ("AE", no_pid3),  # v2.3.1: ERR-1 (ELD)
        ("AE", adt("A08", "PAT-A3", "X").replace("PID|1||PAT-A3^^^HOSP|", "PID|1|||")),  # v2.5
        ("AR", msh("SIU^S12", "C1", version="2.5") + "\r"),  # unsupported type
        ("AR", msh("ADT^A08", "C2", version="2.6") + "\r" + pid("P") + "\r"),  # version
        ("AE", orm("PAT-A4", "A5", control="SC")),  # ORC-1 not NW/XO/CA/DC
    ]
    acks = []
    for expected, message in cases:
        ack = _ack_text(await mllp_send(port, message, tmp_path))
        assert ack_code(ack) == expected, (expected, ack)
        acks.append(ack)
    verdicts = hapi(hapi_classpath, acks, tmp_path)
    assert len(verdicts) == len(cases), verdicts
    assert all(v.startswith("OK ACK") for v in verdicts), verdicts
    codes = [v.split(" ")[2:] for v in verdicts]
    assert codes == [
        ["AA", ""],
        ["AA", ""],
        ["AE", "101"],
        ["AE", "101"],
        ["AR", "200"],
        ["AR", "203"],
        ["AE", "103"],
    ], verdicts
    # MSH-3..6 swapped (the ACK comes from us and goes to the RIS)
    assert acks[0].split("|")[2:6] == ["CLOUDPACS", "CLOUDPACS", "RIS", "RADIOLOGY"]


@pytest.mark.asyncio(loop_scope="session")
async def test_not_hl7_and_kafka_unavailable_are_rejected(
    start_hl7, tenant: str, tmp_path: Path
) -> None:
    hl7 = await start_hl7(default_tenant=tenant)
    ack = _ack_text(await mllp_send(hl7.mllp_port, "hello, this is not HL7\r", tmp_path))
    assert ack_code(ack) == "AR"
    # the listener stays up and answers the next message
    assert ack_code(await mllp_send(hl7.mllp_port, adt("A04", "P9", "A^B"), tmp_path)) == "AA"
    # events that cannot be made durable: AR 207, the sender keeps the message and resends
    await hl7.publisher.stop()
    ack = _ack_text(await mllp_send(hl7.mllp_port, adt("A04", "P9", "A^B"), tmp_path))
    assert ack_code(ack) == "AR"
    assert "207^Application internal error^HL70357" in ack


@pytest.mark.asyncio(loop_scope="session")
async def test_unregistered_facility_is_rejected(start_hl7, tmp_path: Path) -> None:
    hl7 = await start_hl7(default_tenant=None, tenant_by_facility={"KNOWN": "t1"})
    ack = _ack_text(await mllp_send(hl7.mllp_port, adt("A04", "P1", "A^B"), tmp_path))
    assert ack_code(ack) == "AR"
    assert "204^Unknown key identifier" in ack


def test_oru_parses_in_hapi(hapi_classpath: str, tmp_path: Path, infra_env: dict[str, str]) -> None:
    report = pb.ReportIndexed(
        patient=pb.Patient(patient_id="P|1", patient_name="DOE^JANE", patient_sex="F"),
        accession_number="ACC1",
        text="Imaging Measurement Report\n  NUM: Length = 12.5 mm",
        measurements=[
            pb.Measurement(
                concept_code_value="410668003",
                concept_code_scheme="SCT",
                concept_code_meaning="Length",
                value="12.5",
                units_code_value="mm",
                units_code_meaning="mm",
                finding_site="Lung",
            )
        ],
    )
    oru = build_oru(report, Hl7Settings())
    (verdict,) = hapi(hapi_classpath, [oru], tmp_path)
    assert verdict.startswith("OK ORU_R01 P|1 "), verdict  # escaped \F\ read back as "|"
    assert verdict.endswith("NUM: Length = 12.5 mm"), verdict  # OBX-5 of the second OBX


@pytest.mark.asyncio(loop_scope="session")
async def test_oversized_message_is_rejected_and_the_listener_goes_on(
    start_hl7, tenant: str, tmp_path: Path
) -> None:
    hl7 = await start_hl7(default_tenant=tenant, max_message_bytes=1024)
    big = adt("A08", "P1", "A^" + "B" * 2000)
    assert ack_code(_ack_text(await mllp_send(hl7.mllp_port, big, tmp_path))) == "AR"
    assert ack_code(await mllp_send(hl7.mllp_port, adt("A08", "P1", "A^B"), tmp_path)) == "AA"
