"""Audit events: what every service emits when something touches patient data or security.

Each event is a :class:`pacs.events.v1.AuditEvent`, one of the DICOM audit message types of
PS3.15 A.5.3 (Query, DICOM Instances Transferred, Security Alert, ...), with the codes of
PS3.16 (DCM) those messages use. This module holds one small builder per hook; a hook is one
line, ``audit_events.emit(audit_events.<builder>(...))``, and :mod:`pacs_common.audit_emitter`
(re-exported here: :func:`emit`, :class:`AuditSettings`, ...) publishes it without blocking the
user's operation.

Audit events carry patient identifiers by design; nothing here logs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from pacs.events.v1 import audit_events_pb2 as audit_pb

from pacs_common.audit_emitter import (
    TOPIC_AUDIT,
    AuditEmitter,
    AuditSettings,
    emit,
    install,
    start_emitter,
)
from pacs_common.logging import redact_uids
from pacs_common.patient_id import patient_id_of

__all__ = [
    "APPLICATION",
    "APPLICATION_START",
    "APPLICATION_STOP",
    "DESTINATION_ROLE",
    "EVENT_ID_CODES",
    "EVENT_TYPE_CODES",
    "LOGIN",
    "MINOR_FAILURE",
    "NODE_AUTHENTICATION",
    "RESTRICTED_FUNCTION",
    "ROLE_CODES",
    "SERIOUS_FAILURE",
    "SOURCE_ROLE",
    "SUCCESS",
    "TOPIC_AUDIT",
    "AssociationCaller",
    "AuditEmitter",
    "AuditSettings",
    "EventType",
    "Outcome",
    "TokenCaller",
    "application_activity",
    "association_refused",
    "audit_log_used",
    "audited_retrieve",
    "caller_query",
    "dead_letter_handled",
    "dicom_actor",
    "dicom_instances_stored",
    "dicom_login",
    "dicom_query",
    "dicom_retrieve",
    "dicom_stored",
    "emit",
    "exact_patient",
    "install",
    "rpc_query",
    "rpc_refused",
    "service_actor",
    "start_emitter",
    "study_deleted",
    "token_actor",
]

EventType = audit_pb.AuditEventType
Outcome = audit_pb.AuditOutcome
SUCCESS = audit_pb.AUDIT_OUTCOME_SUCCESS_UNSPECIFIED
MINOR_FAILURE = audit_pb.AUDIT_OUTCOME_MINOR_FAILURE
SERIOUS_FAILURE = audit_pb.AUDIT_OUTCOME_SERIOUS_FAILURE

# PS3.16 CID 400/401/402 (DCM) codes named by PS3.15 A.5.3.
EVENT_ID_CODES: dict[int, tuple[str, str]] = {
    audit_pb.AUDIT_EVENT_TYPE_APPLICATION_ACTIVITY: ("110100", "Application Activity"),
    audit_pb.AUDIT_EVENT_TYPE_AUDIT_LOG_USED: ("110101", "Audit Log Used"),
    audit_pb.AUDIT_EVENT_TYPE_BEGIN_TRANSFERRING: (
        "110102",
        "Begin Transferring DICOM Instances",
    ),
    audit_pb.AUDIT_EVENT_TYPE_INSTANCES_ACCESSED: ("110103", "DICOM Instances Accessed"),
    audit_pb.AUDIT_EVENT_TYPE_INSTANCES_TRANSFERRED: ("110104", "DICOM Instances Transferred"),
    audit_pb.AUDIT_EVENT_TYPE_STUDY_DELETED: ("110105", "DICOM Study Deleted"),
    audit_pb.AUDIT_EVENT_TYPE_EXPORT: ("110106", "Export"),
    audit_pb.AUDIT_EVENT_TYPE_IMPORT: ("110107", "Import"),
    audit_pb.AUDIT_EVENT_TYPE_ORDER_RECORD: ("110109", "Order Record"),
    audit_pb.AUDIT_EVENT_TYPE_PATIENT_RECORD: ("110110", "Patient Record"),
    audit_pb.AUDIT_EVENT_TYPE_QUERY: ("110112", "Query"),
    audit_pb.AUDIT_EVENT_TYPE_SECURITY_ALERT: ("110113", "Security Alert"),
    audit_pb.AUDIT_EVENT_TYPE_USER_AUTHENTICATION: ("110114", "User Authentication"),
}
EVENT_TYPE_CODES: dict[str, str] = {
    "110120": "Application Start",
    "110121": "Application Stop",
    "110122": "Login",
    "110123": "Logout",
    "110126": "Node Authentication",
    "110127": "Emergency Override",
    "110132": "Use of Restricted Function",
}
ROLE_CODES: dict[str, str] = {
    "110150": "Application",
    "110151": "Application Launcher",
    "110152": "Destination Role ID",
    "110153": "Source Role ID",
}
APPLICATION_START, APPLICATION_STOP = "110120", "110121"
LOGIN = "110122"
NODE_AUTHENTICATION, RESTRICTED_FUNCTION = "110126", "110132"
APPLICATION, SOURCE_ROLE, DESTINATION_ROLE = "110150", "110153", "110152"


# --- actors ------------------------------------------------------------------------------


class AssociationCaller(Protocol):
    """What a hook needs from a DICOM caller (the gateway's admitted ``Caller``)."""

    @property
    def tenant(self) -> str: ...
    @property
    def calling_ae_title(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def user(self) -> str | None: ...


def dicom_actor(
    ae_title: str,
    address: str,
    *,
    user: str | None = None,
    requestor: bool = True,
    role_code: str = "",
) -> audit_pb.AuditActor:
    """An application entity (PS3.15 A.5.1 ActiveParticipant: UserID the AE title, or the
    user identity's subject with the AE title as AlternativeUserID)."""
    return audit_pb.AuditActor(
        user_id=user or ae_title,
        alternative_user_id=f"AETITLES={ae_title}" if user else "",
        ae_title=ae_title,
        network_address=address,
        requestor=requestor,
        token_subject=user or "",
        role_code=role_code,
    )


def token_actor(subject: str, address: str = "") -> audit_pb.AuditActor:
    """A gRPC caller authenticated (or not) by a bearer token."""
    return audit_pb.AuditActor(
        user_id=subject or "anonymous",
        token_subject=subject,
        network_address=address,
        requestor=True,
    )


def service_actor(service: str, *, role_code: str = APPLICATION) -> audit_pb.AuditActor:
    """This service itself (the non-requesting participant)."""
    return audit_pb.AuditActor(user_id=service, requestor=False, role_code=role_code)


def _caller_actor(caller: AssociationCaller, role_code: str = "") -> audit_pb.AuditActor:
    return dicom_actor(
        caller.calling_ae_title, caller.address, user=caller.user, role_code=role_code
    )


def _outcome(ok: bool) -> Outcome.ValueType:
    return SUCCESS if ok else MINOR_FAILURE


# --- builders, one per hook ----------------------------------------------------------------


def dicom_instances_stored(
    caller: AssociationCaller | None,
    ae_title: str,
    *,
    study_instance_uid: str,
    sop_class_uid: str,
    part10: bytes,
    ok: bool,
) -> audit_pb.AuditEvent | None:
    """C-STORE received: DICOM Instances Transferred, action Create (PS3.15 A.5.3.4)."""
    if caller is None:
        return None
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_INSTANCES_TRANSFERRED,
        action="C",
        outcome=_outcome(ok),
        actors=[
            _caller_actor(caller, SOURCE_ROLE),
            service_actor(ae_title, role_code=DESTINATION_ROLE),
        ],
        tenant=caller.tenant,
        patient_id=patient_id_of(part10) if part10 else "",
        study_instance_uids=[study_instance_uid] if study_instance_uid else [],
        sop_classes=[audit_pb.SopClassCount(sop_class_uid=sop_class_uid, number_of_instances=1)]
        if sop_class_uid
        else [],
    )


def exact_patient(value: object) -> str:
    """A Patient ID matching key naming one patient ('' for none, or wildcards; PS3.4
    C.2.2.2.4), so that "who looked for patient X" finds the queries naming X."""
    text = str(value or "").strip()
    return "" if any(c in text for c in "*?\\") else text


def dicom_query(
    caller: AssociationCaller | None,
    ae_title: str,
    model: str,
    identifier: bytes,
    ok: bool,
    *,
    patient_id: object = "",
) -> audit_pb.AuditEvent | None:
    """C-FIND: Query (PS3.15 A.5.3.10), the identifier as the query participant, and the
    patient when the query names exactly one."""
    if caller is None:
        return None
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_QUERY,
        action="E",
        outcome=_outcome(ok),
        actors=[
            _caller_actor(caller, SOURCE_ROLE),
            service_actor(ae_title, role_code=DESTINATION_ROLE),
        ],
        tenant=caller.tenant,
        patient_id=exact_patient(patient_id),
        query=identifier,
        query_model=model,
    )


def dicom_retrieve(
    caller: AssociationCaller | None,
    ae_title: str,
    refs: Iterable[Any],
    *,
    begin: bool,
    ok: bool = True,
    destination: str = "",
    patient_id: str = "",
) -> audit_pb.AuditEvent | None:
    """C-MOVE/C-GET: Begin Transferring DICOM Instances when the sub-operations start
    (PS3.15 A.5.3.3), DICOM Instances Transferred, action Read, when they ended (A.5.3.4).

    ``refs`` are the ``InstanceRef``s sent (study and SOP class of each)."""
    if caller is None:
        return None
    studies: list[str] = []
    classes: dict[str, int] = {}
    for ref in refs:
        if ref.study_instance_uid not in studies:
            studies.append(ref.study_instance_uid)
        classes[ref.sop_class_uid] = classes.get(ref.sop_class_uid, 0) + 1
    receiver = (
        dicom_actor(destination, "", requestor=False, role_code=DESTINATION_ROLE)
        if destination
        else _caller_actor(caller, DESTINATION_ROLE)
    )
    actors = [service_actor(ae_title, role_code=SOURCE_ROLE), receiver]
    if destination:
        actors.append(_caller_actor(caller))
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_BEGIN_TRANSFERRING
        if begin
        else audit_pb.AUDIT_EVENT_TYPE_INSTANCES_TRANSFERRED,
        action="E" if begin else "R",
        outcome=_outcome(ok),
        actors=actors,
        tenant=caller.tenant,
        patient_id=patient_id,
        study_instance_uids=studies,
        sop_classes=[
            audit_pb.SopClassCount(sop_class_uid=uid, number_of_instances=count)
            for uid, count in classes.items()
        ],
    )


def audited_retrieve(
    sends: Iterator[tuple[int, Any]],
    caller: AssociationCaller | None,
    event: Any,
    refs: list[Any],
    *,
    move: bool = False,
) -> Iterator[tuple[int, Any]]:
    """Pass a C-MOVE/C-GET's sub-operation datasets through to pynetdicom, auditing them:
    Begin Transferring before the first, then one DICOM Instances Transferred per patient
    (read from the datasets sent, since the index's instance references carry no Patient ID)
    when the last was handed over or the retrieve was cancelled."""
    ae_title = str(getattr(event.assoc.acceptor, "ae_title", "") or "").strip()
    destination = str(event.move_destination or "").strip() if move else ""
    emit(dicom_retrieve(caller, ae_title, refs, begin=True, destination=destination))
    by_patient: dict[str, list[Any]] = {}
    completed = True
    try:
        for status, dataset in sends:
            if dataset is None:
                completed = False
            else:
                by_patient.setdefault(str(dataset.get("PatientID", "") or ""), []).append(dataset)
            yield status, dataset
    finally:
        for patient_id, datasets in by_patient.items():
            emit(
                dicom_retrieve(
                    caller,
                    ae_title,
                    [_SentRef(d) for d in datasets],
                    begin=False,
                    ok=completed,
                    destination=destination,
                    patient_id=patient_id,
                )
            )


class _SentRef:
    """The study and SOP class of a dataset handed to pynetdicom, like an InstanceRef."""

    def __init__(self, dataset: Any) -> None:
        self.study_instance_uid = str(dataset.get("StudyInstanceUID", "") or "")
        self.sop_class_uid = str(dataset.get("SOPClassUID", "") or "")


def _our_ae_title(assoc: Any) -> str:
    return str(getattr(assoc.acceptor, "ae_title", "") or "").strip()


def dicom_stored(
    caller: AssociationCaller | None, event: Any, instance: Any, part10: bytes
) -> audit_pb.AuditEvent | None:
    """A C-STORE that succeeded (``instance`` its InstanceRef)."""
    return dicom_instances_stored(
        caller,
        _our_ae_title(event.assoc),
        study_instance_uid=instance.study_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        part10=part10,
        ok=True,
    )


class _Requestor(Protocol):
    @property
    def calling_ae_title(self) -> str: ...
    @property
    def address(self) -> str: ...


def association_refused(
    ae_title: str, request: _Requestor | None, reason: str
) -> audit_pb.AuditEvent:
    """A refused association: Security Alert, Node Authentication (PS3.15 A.5.3.11)."""
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_SECURITY_ALERT,
        action="E",
        outcome=MINOR_FAILURE,
        outcome_description=f"association refused: {reason}",
        event_type_code=NODE_AUTHENTICATION,
        actors=[
            dicom_actor(
                request.calling_ae_title if request else "unknown",
                request.address if request else "",
            ),
            service_actor(ae_title.strip()),
        ],
    )


def dicom_login(
    assoc: Any, caller: AssociationCaller | None, ok: bool, reason: str = ""
) -> audit_pb.AuditEvent | None:
    """A DICOM User Identity (PS3.7 D.3.3.7) checked: User Authentication, Login
    (PS3.15 A.5.3.12); a failure refuses the association."""
    if caller is None:
        return None
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_USER_AUTHENTICATION,
        action="E",
        outcome=_outcome(ok),
        outcome_description=reason,
        event_type_code=LOGIN,
        tenant=caller.tenant,
        actors=[_caller_actor(caller), service_actor(_our_ae_title(assoc))],
    )


def rpc_refused(
    service: str, rpc: str, *, subject: str, address: str, reason: str, tenant: str = ""
) -> audit_pb.AuditEvent:
    """A refused gRPC call (bad token, missing role, another tenant): Security Alert, Use of
    Restricted Function (PS3.15 A.5.3.11)."""
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_SECURITY_ALERT,
        action="E",
        outcome=MINOR_FAILURE,
        outcome_description=f"{rpc}: {reason}",
        event_type_code=RESTRICTED_FUNCTION,
        tenant=tenant,
        actors=[token_actor(subject, address), service_actor(service)],
    )


def rpc_query(
    service: str, rpc: str, *, subject: str, tenant: str, request: bytes, ok: bool
) -> audit_pb.AuditEvent:
    """A gRPC query (QueryService): Query (PS3.15 A.5.3.10), the request as the query."""
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_QUERY,
        action="E",
        outcome=_outcome(ok),
        tenant=tenant,
        actors=[token_actor(subject), service_actor(service)],
        query=request,
        query_model=rpc,
    )


class TokenCaller(Protocol):
    """What a hook needs from an authenticated gRPC caller (:class:`pacs_common.auth.Caller`)."""

    @property
    def subject(self) -> str: ...
    @property
    def trusted_service(self) -> bool: ...


def caller_query(
    caller: TokenCaller,
    service: str,
    rpc: str,
    tenant: str,
    request: bytes,
    *,
    patient_id: object = "",
) -> audit_pb.AuditEvent | None:
    """A query by an application (token); None for a trusted service, which audits the query
    of its own caller (the gateway's C-FIND) itself."""
    if caller.trusted_service:
        return None
    event = rpc_query(service, rpc, subject=caller.subject, tenant=tenant, request=request, ok=True)
    event.patient_id = exact_patient(patient_id)
    return event


def audit_log_used(service: str, subject: str, tenant: str, request: bytes) -> audit_pb.AuditEvent:
    """The audit trail was read: Audit Log Used (PS3.15 A.5.3.2)."""
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_AUDIT_LOG_USED,
        action="R",
        tenant=tenant,
        actors=[token_actor(subject), service_actor(service)],
        query=request,
        query_model="AuditService/Query",
    )


def application_activity(service: str, started: bool) -> audit_pb.AuditEvent:
    """A service started or stopped: Application Activity (PS3.15 A.5.3.1)."""
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_APPLICATION_ACTIVITY,
        action="E",
        event_type_code=APPLICATION_START if started else APPLICATION_STOP,
        actors=[service_actor(service)],
    )


def dead_letter_handled(
    operator: str,
    dead_letter_id: str,
    outcome: str,
    reason: str,
    *,
    tenant: str = "",
    study_instance_uids: Iterable[str] = (),
) -> audit_pb.AuditEvent:
    """An operator replayed or dropped a dead-lettered event (``pacs dlq``): Security Alert,
    Use of Restricted Function (PS3.15 A.5.3.11), with the event's tenant and studies as the
    participants so that "who touched this study" finds it. Not DICOM Instances Accessed
    (A.5.3.5): a replay or a drop reads and changes no image by itself, it decides whether a
    consumer applies an event. ``reason`` is the operator's text; UIDs are redacted from it."""
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_SECURITY_ALERT,
        action="E",
        outcome=SUCCESS,
        outcome_description=redact_uids(f"dead letter {dead_letter_id} {outcome}: {reason}"),
        event_type_code=RESTRICTED_FUNCTION,
        tenant=tenant,
        study_instance_uids=[uid for uid in study_instance_uids if uid],
        actors=[
            audit_pb.AuditActor(user_id=operator, requestor=True),
            service_actor("pacs-cli"),
        ],
    )


def study_deleted(
    caller: TokenCaller,
    service: str,
    *,
    tenant: str,
    study_instance_uid: str,
    patient_id: str,
    sop_classes: dict[str, int],
    ok: bool,
    description: str = "",
) -> audit_pb.AuditEvent:
    """A study, or part of it, was deleted: DICOM Study Deleted, action Delete (PS3.15
    A.5.3.6), one event per study with the SOP classes and counts removed. ``description``
    says what was asked (series, instance, retention) and why."""
    return audit_pb.AuditEvent(
        event_type=audit_pb.AUDIT_EVENT_TYPE_STUDY_DELETED,
        action="D",
        outcome=_outcome(ok),
        outcome_description=description,
        tenant=tenant,
        actors=[token_actor(caller.subject), service_actor(service)],
        patient_id=patient_id,
        study_instance_uids=[study_instance_uid],
        sop_classes=[
            audit_pb.SopClassCount(sop_class_uid=uid, number_of_instances=count)
            for uid, count in sorted(sop_classes.items())
        ],
    )
