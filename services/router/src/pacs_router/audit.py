"""The audit event of an instance sent to another facility.

Sending an instance out of cloudpacs discloses patient data to another organisation: each
send that the destination accepted, or refused for good, is a DICOM Instances Transferred
event (PS3.15 A.5.3.4), action Read, with the router as the source and the destination as the
receiver, emitted on the audit topic with the same guarantees as every other audit event.
"""

from __future__ import annotations

from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs.type.v1 import instance_pb2
from pacs_common.audit_events import (
    DESTINATION_ROLE,
    MINOR_FAILURE,
    SOURCE_ROLE,
    SUCCESS,
    dicom_actor,
    emit,
)
from pacs_common.patient_id import patient_id_of

from pacs_router.rules import Destination, DimseDestination


def instance_sent(
    calling_ae: str,
    name: str,
    destination: Destination,
    instance: instance_pb2.InstanceRef,
    part10: bytes,
    *,
    ok: bool,
) -> audit_pb.AuditEvent:
    """DICOM Instances Transferred (Read) from the router to one destination."""
    if isinstance(destination, DimseDestination):
        receiver = dicom_actor(
            destination.ae_title, destination.host, requestor=False, role_code=DESTINATION_ROLE
        )
    else:
        receiver = audit_pb.AuditActor(
            user_id=destination.url, requestor=False, role_code=DESTINATION_ROLE
        )
    receiver.alternative_user_id = f"destination={name}"
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_INSTANCES_TRANSFERRED,
        action="R",
        outcome=SUCCESS if ok else MINOR_FAILURE,
        actors=[
            dicom_actor(calling_ae, "", requestor=False, role_code=SOURCE_ROLE),
            receiver,
        ],
        tenant=instance.tenant,
        patient_id=patient_id_of(part10) if part10 else "",
        study_instance_uids=[instance.study_instance_uid],
        sop_classes=[
            audit_pb.SopClassCount(sop_class_uid=instance.sop_class_uid, number_of_instances=1)
        ],
    )


def audit_sent(
    calling_ae: str,
    name: str,
    destination: Destination,
    instance: instance_pb2.InstanceRef,
    part10: bytes,
    *,
    ok: bool,
) -> None:
    """Emit :func:`instance_sent` (never raises, never blocks)."""
    emit(instance_sent(calling_ae, name, destination, instance, part10, ok=ok))
