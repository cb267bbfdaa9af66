"""HL7 v2 messages to workflow events: ADT (A01, A04, A08, A31, A40), ORM^O01 and OMI^O23.

What each message means, and the field each value comes from, follows IHE Radiology's
Scheduled Workflow (RAD-1/RAD-2/RAD-4 Patient Registration and Procedure Scheduled, RAD-12
Patient Update; HL7 v2.3.1 ORM^O01 and v2.5.1 OMI^O23) as dcm4chee's HL7 conformance
documents it; ``docs/hl7.md`` has the table. A message is checked completely before anything
is published: a missing required field answers ``AE`` and publishes nothing.

Events are keyed ``tenant/PatientID`` so that one patient's events stay in order on one
partition (an A40 is keyed by the surviving patient).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import hl7
from google.protobuf.message import Message
from pacs.events.v1 import workflow_events_pb2 as pb

from pacs_hl7.errors import (
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    UNSUPPORTED_VERSION_ID,
    Location,
    content_error,
    rejection,
)
from pacs_hl7.fields import SegmentView, patient_of, person_name, segments, split_datetime

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
PATIENT_UPDATES = ("A01", "A04", "A08", "A31")
ORDER_ACTIONS = {
    "NW": pb.ORDER_ACTION_NEW,
    "XO": pb.ORDER_ACTION_CHANGE,
    "CA": pb.ORDER_ACTION_CANCEL,
    "DC": pb.ORDER_ACTION_DISCONTINUE,
}
"""ORC-1 order control codes (HL7 table 0119) that change the worklist."""


@dataclass
class Translated:
    """What one message becomes: its origin and the events to publish, in order."""

    origin: pb.MessageOrigin
    events: list[tuple[str, Message]] = field(default_factory=list)


def message_type(msh: SegmentView) -> tuple[str, str]:
    """MSH-9 message code and trigger event."""
    return msh.get(9, 1).upper(), msh.get(9, 2).upper()


def translate(message: hl7.Message, tenant: str, received_time: str) -> Translated:
    """The events one message stands for.

    Raises:
        Hl7Rejection: the message is not supported (``AR``) or not valid (``AE``).
    """
    views = segments(message)
    msh = views[0]
    version = msh.get(12)
    if version not in SUPPORTED_VERSIONS:
        raise rejection(
            UNSUPPORTED_VERSION_ID,
            f"version {version or '(none)'} not supported; "
            f"accepted: {', '.join(SUPPORTED_VERSIONS)}",
            Location("MSH", 1, 12),
        )
    code, trigger = message_type(msh)
    origin = pb.MessageOrigin(
        tenant=tenant,
        sender=f"{msh.get(3)}^{msh.get(4)}",
        control_id=msh.require(10, what="MSH-10 message control ID"),
        message_type=f"{code}^{trigger}",
        received_time=received_time,
    )
    translated = Translated(origin)
    handler = _handler(code, trigger)
    handler(views, translated)
    return translated


def _handler(code: str, trigger: str) -> Callable[[list[SegmentView], Translated], None]:
    if code == "ADT":
        if trigger in PATIENT_UPDATES:
            return _patient_updates
        if trigger == "A40":
            return _merges
        raise rejection(UNSUPPORTED_EVENT_CODE, f"ADT^{trigger} is not supported")
    if (code, trigger) in (("ORM", "O01"), ("OMI", "O23")):
        return _orders
    raise rejection(UNSUPPORTED_MESSAGE_TYPE, f"{code}^{trigger} is not supported")


def key_of(tenant: str, patient: pb.Patient) -> str:
    """The Kafka key of a patient's events."""
    return f"{tenant}/{patient.patient_id}"


def _first(views: list[SegmentView], name: str) -> SegmentView:
    for view in views:
        if view.name == name:
            return view
    raise content_error(SEGMENT_SEQUENCE_ERROR, f"segment {name} is missing", Location(name))


def _patient_updates(views: list[SegmentView], out: Translated) -> None:
    """A01/A04 (register), A08 (update), A31 (update person): one PatientUpdated."""
    patient = patient_of(_first(views, "PID"))
    event = pb.PatientUpdated(origin=out.origin, patient=patient)
    out.events.append((key_of(out.origin.tenant, patient), event))


def _merges(views: list[SegmentView], out: Translated) -> None:
    """A40 (ADT_A39 structure): each PID with the MRG after it is one merge."""
    target: pb.Patient | None = None
    for view in views:
        if view.name == "PID":
            target = patient_of(view)
        elif view.name == "MRG":
            if target is None:
                raise content_error(
                    SEGMENT_SEQUENCE_ERROR, "MRG before its PID", Location("MRG", view.sequence)
                )
            source = pb.Patient(
                patient_id=view.require(1, what="MRG-1 prior patient identifier"),
                issuer_of_patient_id=view.get(1, 4),
            )
            merged = pb.PatientsMerged(origin=out.origin, target=target, source=source)
            out.events.append((key_of(out.origin.tenant, target), merged))
            target = None
    if not out.events:
        raise content_error(SEGMENT_SEQUENCE_ERROR, "A40 needs PID and MRG", Location("MRG"))


@dataclass
class _OrderGroup:
    orc: SegmentView
    obr: SegmentView | None = None
    tq1: SegmentView | None = None
    zds: SegmentView | None = None
    ipcs: list[SegmentView] = field(default_factory=list)


def _order_groups(views: list[SegmentView]) -> list[_OrderGroup]:
    groups: list[_OrderGroup] = []
    for view in views:
        if view.name == "ORC":
            groups.append(_OrderGroup(view))
        elif groups and view.name in ("OBR", "TQ1", "ZDS"):
            setattr(groups[-1], view.name.lower(), view)
        elif groups and view.name == "IPC":
            groups[-1].ipcs.append(view)
    if not groups:
        raise content_error(SEGMENT_SEQUENCE_ERROR, "segment ORC is missing", Location("ORC"))
    return groups


def _orders(views: list[SegmentView], out: Translated) -> None:
    """ORM^O01 / OMI^O23: each ORC group (with its OBR, TQ1, ZDS, IPCs) is one order, each IPC
    (or the OBR itself when there is none) one scheduled procedure step."""
    patient = patient_of(_first(views, "PID"))
    pv1 = next((v for v in views if v.name == "PV1"), None)
    referring = person_name(pv1, 8, first_component=2) if pv1 is not None else ""
    key = key_of(out.origin.tenant, patient)
    for group in _order_groups(views):
        control = group.orc.require(1, what="ORC-1 order control").upper()
        action = ORDER_ACTIONS.get(control)
        if action is None:
            raise content_error(
                TABLE_VALUE_NOT_FOUND,
                f"ORC-1 {control} is not supported (NW, XO, CA, DC)",
                Location("ORC", group.orc.sequence, 1),
            )
        for step in _steps(group, referring or person_name(group.orc, 12, first_component=2)):
            event: Message
            if action == pb.ORDER_ACTION_NEW:
                event = pb.OrderPlaced(origin=out.origin, patient=patient, step=step)
            elif action == pb.ORDER_ACTION_CHANGE:
                event = pb.OrderChanged(origin=out.origin, patient=patient, step=step)
            else:
                event = pb.OrderCancelled(
                    origin=out.origin, patient=patient, step=step, action=action
                )
            out.events.append((key, event))


def _steps(group: _OrderGroup, referring: str) -> list[pb.ScheduledStep]:
    orc, obr = group.orc, group.obr
    order_number = orc.get(2) or orc.get(3)
    if not order_number:
        raise content_error(
            REQUIRED_FIELD_MISSING,
            "ORC-2 placer or ORC-3 filler order number is required",
            Location("ORC", orc.sequence, 2),
        )
    if obr is None:
        raise content_error(SEGMENT_SEQUENCE_ERROR, "OBR is missing after ORC", Location("OBR"))
    start = ""
    for candidate in (
        group.tq1.get(7) if group.tq1 is not None else "",
        obr.get(27, 4),
        orc.get(7, 4),
        obr.get(36),
        obr.get(7),
    ):
        if candidate:
            start = candidate
            break
    start_date, start_time = split_datetime(start)
    base = pb.ScheduledStep(
        order_number=order_number,
        accession_number=obr.get(18),
        requested_procedure_id=obr.get(19),
        step_id=obr.get(20),
        study_instance_uid=group.zds.get(1) if group.zds is not None else "",
        modality=obr.get(24),
        station_ae_title=obr.get(21),
        start_date=start_date,
        start_time=start_time,
        procedure_code_value=obr.get(4, 1),
        procedure_description=obr.get(4, 2),
        procedure_code_scheme=obr.get(4, 3),
        performing_physician=person_name(obr, 34, first_component=2),
        referring_physician=referring,
    )
    if not group.ipcs:
        return [_completed(base)]
    steps = []
    for ipc in group.ipcs:
        step = pb.ScheduledStep()
        step.CopyFrom(base)
        step.accession_number = ipc.get(1) or base.accession_number
        step.requested_procedure_id = ipc.get(2) or base.requested_procedure_id
        step.study_instance_uid = ipc.get(3) or base.study_instance_uid
        step.step_id = ipc.get(4) or base.step_id
        step.modality = ipc.get(5) or base.modality
        step.station_ae_title = ipc.get(9) or base.station_ae_title
        steps.append(_completed(step))
    return steps


def _completed(step: pb.ScheduledStep) -> pb.ScheduledStep:
    """Identifiers the modality needs even when the placer left them out."""
    if not step.requested_procedure_id:
        step.requested_procedure_id = step.order_number
    if not step.step_id:
        step.step_id = step.requested_procedure_id
    return step
