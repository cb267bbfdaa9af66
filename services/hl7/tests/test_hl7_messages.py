"""What each supported message becomes (no infrastructure): field mapping of ORM^O01 and
OMI^O23 (IHE RAD-4), ADT A01/A08/A40, and the ACK's ERR segment per version."""

from __future__ import annotations

import hl7
import pytest
from hl7_helpers import adt, msh, orm, segment
from pacs.events.v1 import workflow_events_pb2 as pb
from pacs_hl7.ack import ack_of
from pacs_hl7.errors import Hl7Rejection
from pacs_hl7.messages import translate


def _translate(text: str) -> list[object]:
    return [event for _, event in translate(hl7.parse(text), "t1", "now").events]


def test_orm_maps_ihe_fields_to_the_step() -> None:
    (event,) = _translate(
        orm("P1", "ACC9", station="CT01", start="202612011015", study_uid="1.2.3")
    )
    assert isinstance(event, pb.OrderPlaced)
    assert event.patient.patient_id == "P1"
    assert event.patient.issuer_of_patient_id == "HOSP"
    assert event.patient.patient_name == "DOE^JANE"
    step = event.step
    assert step.order_number == "POACC9"
    assert step.accession_number == "ACC9"
    assert step.requested_procedure_id == "RPACC9"
    assert step.step_id == "SPSACC9"
    assert step.station_ae_title == "CT01"
    assert step.modality == "CT"
    assert (step.start_date, step.start_time) == ("20261201", "1015")
    assert step.study_instance_uid == "1.2.3"
    assert step.procedure_code_value == "CTCHEST"
    assert step.procedure_description == "CT Chest"
    assert step.performing_physician == "TECH^TOM"
    assert step.referring_physician == "REFER^RICH"


def test_orm_change_and_cancel() -> None:
    (changed,) = _translate(orm("P1", "A1", control="XO"))
    assert isinstance(changed, pb.OrderChanged)
    (cancelled,) = _translate(orm("P1", "A1", control="DC"))
    assert isinstance(cancelled, pb.OrderCancelled)
    assert cancelled.action == pb.ORDER_ACTION_DISCONTINUE


def test_omi_o23_one_step_per_ipc() -> None:
    text = "\r".join(
        [
            msh("OMI^O23^OMI_O23", "C1", version="2.5.1"),
            segment("PID", {1: "1", 3: "P7^^^HOSP", 5: "ROE^RITA"}),
            segment("ORC", {1: "NW", 2: "PO7", 3: "FO7"}),
            segment("TQ1", {1: "1", 7: "20261202083000"}),
            segment("OBR", {1: "1", 2: "PO7", 3: "FO7", 4: "MRHEAD^MR Head^LOCAL"}),
            segment("IPC", {1: "ACC7", 2: "RP7", 3: "1.2.7", 4: "SPS7A", 5: "MR", 9: "MR01"}),
            segment("IPC", {1: "ACC7", 2: "RP7", 3: "1.2.7", 4: "SPS7B", 5: "MR", 9: "MR02"}),
        ]
    )
    events = _translate(text + "\r")
    assert [e.step.step_id for e in events] == ["SPS7A", "SPS7B"]  # type: ignore[attr-defined]
    first = events[0].step  # type: ignore[attr-defined]
    assert (first.accession_number, first.study_instance_uid, first.station_ae_title) == (
        "ACC7",
        "1.2.7",
        "MR01",
    )
    assert (first.start_date, first.start_time) == ("20261202", "083000")


def test_adt_update_and_merge() -> None:
    (updated,) = _translate(adt("A08", "P2", "DOE^JOHN^Q"))
    assert isinstance(updated, pb.PatientUpdated)
    assert updated.patient.patient_name == "DOE^JOHN^Q"
    assert updated.origin.message_type == "ADT^A08"
    (merged,) = _translate(adt("A40", "P3", "DOE^JO", mrg="P2"))
    assert isinstance(merged, pb.PatientsMerged)
    assert (merged.target.patient_id, merged.source.patient_id) == ("P3", "P2")
    assert merged.source.issuer_of_patient_id == "HOSP"


@pytest.mark.parametrize(
    ("text", "code", "error"),
    [
        (msh("ADT^A99", "C", version="2.5") + "\r", "AR", 201),
        (adt("A40", "P3", "X"), "AE", 100),  # no MRG
        (orm("P1", "A1").replace("ORC|NW|POA1|FOA1", "ORC|NW||"), "AE", 101),
    ],
)
def test_rejections(text: str, code: str, error: int) -> None:
    with pytest.raises(Hl7Rejection) as caught:
        _translate(text)
    assert (caught.value.ack_code, caught.value.error_code) == (code, error)


def test_err_segment_follows_the_version() -> None:
    error = Hl7Rejection("AE", 101, "PID-3 is required")
    for version, expected in (
        ("2.3.1", "ERR|^^^101&Required field missing&HL70357\r"),
        ("2.5", "ERR|||101^Required field missing^HL70357|E||||PID-3 is required\r"),
    ):
        message = hl7.parse(msh("ADT^A08", "C9", version=version) + "\r")
        ack = ack_of(message, "AE", "CLOUDPACS", "CLOUDPACS", error)
        assert ack.endswith(expected), ack
        assert "MSA|AE|C9" in ack
