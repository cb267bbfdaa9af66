"""Audit events: what every service emits when something touches patient data or security.

Each event is a :class:`pacs.events.v1.AuditEvent`, one of the DICOM audit message types of
PS3.15 A.5.3 (Query, DICOM Instances Transferred, Security Alert, ...), published on the topic
:data:`TOPIC_AUDIT` with the publisher guarantees of ``InstanceStored`` (``acks=all``, an
idempotent producer) and consumed by the audit service, which chains and exports them.

**Never blocking the user.** An audit hook runs inside the user's operation (a C-STORE
handler in a pynetdicom thread, a gRPC call), so :meth:`AuditEmitter.emit` only puts the event
in a bounded in-memory queue (thread-safe) and returns; a background task drains the queue in
batches and publishes them, retrying while Kafka is down. The queue is flushed when the service
stops (the host's PRODUCERS stage). What the queue cannot hold (Kafka down for long under load)
is dropped, counted in ``pacs_audit_events_dropped_total`` and logged as a count — the price of
never blocking the user; alert on that counter. Redelivered or retried events carry the same
``id``, which the audit service stores once.

**One emitter per process.** Hooks are one-line calls deep inside handlers that several teams
edit (:func:`emit`), so the process's emitter is installed once by its host (:func:`install`)
rather than passed through every constructor; with none installed (auditing off, unit tests)
:func:`emit` does nothing.

Audit events carry patient identifiers by design; this module never logs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from pacs.events.v1 import audit_events_pb2 as audit_pb
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pacs_common.errors import UnavailableError
from pacs_common.events import EventPublisher, now_rfc3339
from pacs_common.metrics import (
    AUDIT_EVENTS_DROPPED,
    AUDIT_EVENTS_EMITTED,
    AUDIT_EVENTS_PUBLISHED,
    AUDIT_QUEUE_DEPTH,
)
from pacs_common.patient_id import patient_id_of
from pacs_common.settings import KafkaSettings

log = logging.getLogger(__name__)

TOPIC_AUDIT = "pacs.audit.v1"
"""AuditEvent, keyed by tenant."""

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


class AuditSettings(BaseSettings):
    """How a service emits audit events (``PACS_AUDIT_EVENTS_*``)."""

    model_config = SettingsConfigDict(env_prefix="PACS_AUDIT_EVENTS_", extra="ignore")

    enabled: bool = Field(True, description="emit audit events (off only for benchmarks)")
    topic: str = Field(TOPIC_AUDIT, description="Kafka topic of audit events")
    queue_size: int = Field(
        100_000, ge=1, description="events held in memory while Kafka is slow or down"
    )
    batch_size: int = Field(500, ge=1, description="most events published in one round trip")
    linger_s: float = Field(
        0.2,
        ge=0,
        description="how long the first queued event waits for others to share its round trip "
        "(one produce request per C-STORE would cost the brokers more than the C-STORE)",
    )


class AuditEmitter:
    """Publishes audit events from a bounded queue in the background (see module docstring)."""

    def __init__(self, kafka: KafkaSettings, source: str, settings: AuditSettings) -> None:
        self.source = source
        self.settings = settings
        self._publisher = EventPublisher(kafka, source=source)
        self._queue: asyncio.Queue[audit_pb.AuditEvent] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._dropped_full = 0
        self.published = 0

    async def start(self) -> None:
        """Start draining in the running loop. Kafka may be down: the drain task connects
        (and reconnects) by itself, so a service starts and serves without it."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self.settings.queue_size)
        self._task = asyncio.create_task(self._drain(), name=f"audit-{self.source}")

    def emit(self, event: audit_pb.AuditEvent) -> None:
        """Queue ``event`` for publishing; never blocks, callable from any thread."""
        if self._loop is None or self._stopping:
            self._drop("stopped")
            return
        if not event.id:
            event.id = str(uuid.uuid4())
        if not event.event_time:
            event.event_time = now_rfc3339()
        if not event.source:
            event.source = self.source
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._put(event)
        else:
            try:
                self._loop.call_soon_threadsafe(self._put, event)
            except RuntimeError:  # the loop closed
                self._drop("stopped")

    def _put(self, event: audit_pb.AuditEvent) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped_full += 1
            self._drop("queue_full")
            if self._dropped_full == 1 or self._dropped_full % 1000 == 0:
                log.error(
                    "audit queue full: audit events are being dropped",
                    extra={"dropped": self._dropped_full, "queue_size": self.settings.queue_size},
                )
            return
        AUDIT_EVENTS_EMITTED.labels(self.source).inc()
        AUDIT_QUEUE_DEPTH.set(self._queue.qsize())

    def _drop(self, reason: str) -> None:
        AUDIT_EVENTS_DROPPED.labels(self.source, reason).inc()

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._publisher.start()
                return
            except UnavailableError as exc:
                log.warning(
                    "audit publisher cannot reach Kafka; retrying", extra={"error": str(exc)}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _drain(self) -> None:
        assert self._queue is not None
        queue = self._queue
        await self._connect()
        while True:
            batch = [await queue.get()]
            full = queue.qsize() >= self.settings.batch_size - 1
            if self.settings.linger_s and not full and not self._stopping:
                await asyncio.sleep(self.settings.linger_s)
            while len(batch) < self.settings.batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            await self._publish(batch)
            for _ in batch:
                queue.task_done()
            AUDIT_QUEUE_DEPTH.set(queue.qsize())

    async def _publish(self, batch: list[audit_pb.AuditEvent]) -> None:
        delay = 0.2
        events = [(event.tenant, event) for event in batch]
        while True:
            try:
                await self._publisher.publish_many(self.settings.topic, events)
            except UnavailableError as exc:
                # Retrying may duplicate some: the audit service stores each event id once.
                log.warning("audit events not acknowledged; retrying", extra={"error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.published += len(batch)
            AUDIT_EVENTS_PUBLISHED.labels(self.source).inc(len(batch))
            return

    async def flush(self) -> None:
        """Wait until every queued event was acknowledged."""
        if self._queue is not None:
            await self._queue.join()

    async def stop(self, drain_s: float | None = None) -> None:
        """Refuse new events, publish what is queued, disconnect; safe to call twice.

        Args:
            drain_s: how long to wait for the queue to drain (None: until done, or until the
                caller cancels, as the host's stop deadline does). What is still queued then
                is counted as dropped.
        """
        self._stopping = True
        if _current is self:
            install(None)
        try:
            if self._task is not None and not self._task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.flush(), drain_s)
        finally:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
            if self._queue is not None and (left := self._queue.qsize()):
                AUDIT_EVENTS_DROPPED.labels(self.source, "stopped").inc(left)
                log.error("audit events not published before the stop", extra={"count": left})
            await self._publisher.stop()


_current: AuditEmitter | None = None


def install(emitter: AuditEmitter | None) -> None:
    """Make ``emitter`` the process's emitter (None: auditing off)."""
    global _current  # noqa: PLW0603  (the one per-process emitter: see the module docstring)
    _current = emitter


def emit(event: audit_pb.AuditEvent | None) -> None:
    """Queue ``event`` on the process's emitter; does nothing without one. Never raises:
    an audit hook must not change the outcome of the user's operation."""
    emitter = _current
    if emitter is None or event is None:
        return
    try:
        emitter.emit(event)
    except Exception:
        log.exception("audit event not queued")


async def start_emitter(
    kafka: KafkaSettings, source: str, settings: AuditSettings | None = None
) -> AuditEmitter | None:
    """Create, start and install the process's emitter (None when auditing is off)."""
    settings = settings or AuditSettings()
    if not settings.enabled:
        install(None)
        return None
    emitter = AuditEmitter(kafka, source, settings)
    await emitter.start()
    install(emitter)
    return emitter


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
