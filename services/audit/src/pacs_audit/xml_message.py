"""An audit record as the DICOM audit message XML of PS3.15 A.5.1.

The elements follow the schema of A.5.1.1 (``schema/audit-message.rng``, transcribed from the
standard), the message contents per type follow A.5.3 (which participants each type names):
the event (EventID, EventTypeCode, action, outcome), one ActiveParticipant per actor, the
audit source (this deployment: the emitting service, the tenant as the enterprise site), and
the participant objects: the patient (A.5.3 "Patient"), each study with its SOP classes
(A.5.3 "Study"), and for a Query the query itself, base64 in ParticipantObjectQuery.
"""

from __future__ import annotations

import base64
import ipaddress
import xml.etree.ElementTree as ET
from importlib import resources

from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_common.audit_events import EVENT_ID_CODES, EVENT_TYPE_CODES, ROLE_CODES

AUDIT_SOURCE_TYPE_APPLICATION_SERVER = "4"
"""A.5.1.2.1: "Application server process tier in a multi-tier system"."""


def schema_path() -> str:
    """Where the transcribed RELAX NG schema of PS3.15 A.5.1.1 is."""
    return str(resources.files("pacs_audit") / "schema" / "audit-message.rng")


def _coded(parent: ET.Element, tag: str, code: str, system: str, meaning: str) -> ET.Element:
    return ET.SubElement(
        parent,
        tag,
        {"csd-code": code, "codeSystemName": system, "originalText": meaning},
    )


def _address_type(address: str) -> str:
    """NetworkAccessPointTypeCode: 2 for an IP address, 1 for a machine name (A.5.1)."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return "1"
    return "2"


def _participant(root: ET.Element, actor: audit_pb.AuditActor) -> None:
    attributes = {"UserID": actor.user_id or "unknown"}
    if actor.alternative_user_id:
        attributes["AlternativeUserID"] = actor.alternative_user_id
    attributes["UserIsRequestor"] = "true" if actor.requestor else "false"
    if actor.network_address:
        attributes["NetworkAccessPointID"] = actor.network_address
        attributes["NetworkAccessPointTypeCode"] = _address_type(actor.network_address)
    element = ET.SubElement(root, "ActiveParticipant", attributes)
    if actor.role_code:
        _coded(element, "RoleIDCode", actor.role_code, "DCM", ROLE_CODES.get(actor.role_code, ""))


def _participant_object(
    root: ET.Element, object_id: str, type_code: str, role: str, id_type: tuple[str, str, str]
) -> ET.Element:
    element = ET.SubElement(
        root,
        "ParticipantObjectIdentification",
        {
            "ParticipantObjectID": object_id,
            "ParticipantObjectTypeCode": type_code,
            "ParticipantObjectTypeCodeRole": role,
        },
    )
    _coded(element, "ParticipantObjectIDTypeCode", *id_type)
    return element


def render(event: audit_pb.AuditEvent) -> bytes:
    """The A.5.1 XML of ``event`` (UTF-8, no declaration: it travels as a syslog MSG)."""
    root = ET.Element("AuditMessage")
    code, meaning = EVENT_ID_CODES.get(event.event_type, ("110100", "Application Activity"))
    identification = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": event.action or "E",
            "EventDateTime": event.event_time,
            "EventOutcomeIndicator": str(int(event.outcome)),
        },
    )
    _coded(identification, "EventID", code, "DCM", meaning)
    if event.event_type_code:
        _coded(
            identification,
            "EventTypeCode",
            event.event_type_code,
            "DCM",
            EVENT_TYPE_CODES.get(event.event_type_code, ""),
        )
    if event.outcome_description:
        ET.SubElement(identification, "EventOutcomeDescription").text = event.outcome_description
    for actor in event.actors or [audit_pb.AuditActor(user_id=event.source or "cloudpacs")]:
        _participant(root, actor)
    source_attributes = {"AuditSourceID": event.source or "cloudpacs"}
    if event.tenant:
        source_attributes["AuditEnterpriseSiteID"] = event.tenant
    source = ET.SubElement(root, "AuditSourceIdentification", source_attributes)
    ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": AUDIT_SOURCE_TYPE_APPLICATION_SERVER})
    if event.patient_id:
        patient = _participant_object(
            root, event.patient_id, "1", "1", ("2", "RFC-3881", "Patient Number")
        )
        ET.SubElement(patient, "ParticipantObjectName")
    for study_uid in event.study_instance_uids:
        study = _participant_object(
            root, study_uid, "2", "3", ("110180", "DCM", "Study Instance UID")
        )
        ET.SubElement(study, "ParticipantObjectName")
        if event.sop_classes:
            description = ET.SubElement(study, "ParticipantObjectDescription")
            for sop_class in event.sop_classes:
                ET.SubElement(
                    description,
                    "SOPClass",
                    {
                        "UID": sop_class.sop_class_uid,
                        "NumberOfInstances": str(sop_class.number_of_instances),
                    },
                )
    if event.event_type == audit_pb.AUDIT_EVENT_TYPE_QUERY:
        query = _participant_object(
            root,
            event.query_model or "unknown",
            "2",
            "24",
            ("110181", "DCM", "SOP Class UID"),
        )
        ET.SubElement(query, "ParticipantObjectQuery").text = base64.b64encode(event.query).decode()
    rendered: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return rendered
