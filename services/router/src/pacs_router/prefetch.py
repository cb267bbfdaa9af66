"""Prefetch: when an order arrives over HL7, bring the patient's prior studies from a remote
archive into cloudpacs, so that they are there when the new study is read.

Consumes ``pacs.workflow.v1`` (group ``router-prefetch``). On ``OrderPlaced`` for a tenant
with a ``prefetch`` entry in the rules file, the router asks the tenant's remote archive with
C-FIND in the Study Root Query/Retrieve Information Model at the STUDY level (PS3.4 C.6.2.1)
for the order's Patient ID (and its Issuer of Patient ID with ``match_issuer``: the archive
must then record the same issuer name as the HIS sends, which is rare), leaves out the
ordered study itself, keeps the most recent ``max_studies`` (of the configured modalities, if
any), and asks the archive with C-MOVE (PS3.4 C.4.2) to send each one to cloudpacs' gateway
(``move_destination``, an AE title the archive knows). The archive then sends the instances to
the gateway with C-STORE, so the priors are stored, indexed and audited like any other image.

An archive that cannot be reached is retried with backoff (the order event is not committed
until the priors were moved); a C-MOVE that ends with failures is logged and counted
(``pacs_route_prefetched_studies_total{outcome="failed"}``) and the next prior is moved. A
redelivered order moves the same priors again, which the gateway stores once (identical bytes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError
from pacs.events.v1 import workflow_events_pb2 as workflow_pb
from pacs_common.errors import InvalidArgumentError, UnavailableError
from pacs_common.events import event_type, header
from pacs_common.metrics import ROUTE_PREFETCHED
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from pacs_router.rules import Prefetch

log = logging.getLogger(__name__)

_ORDER_PLACED = event_type(workflow_pb.OrderPlaced())
_PENDING = {0xFF00, 0xFF01}
_MOVE_DONE = {0x0000, 0xB000}


@dataclass(frozen=True)
class Prior:
    """One prior study found at the archive."""

    study_instance_uid: str
    study_date: str
    modalities: tuple[str, ...]


class Prefetcher:
    """The handler of ``pacs.workflow.v1`` records."""

    def __init__(self, config: Mapping[str, Prefetch], calling_ae: str, timeout_s: float) -> None:
        self.config = config
        self.calling_ae = calling_ae
        self.timeout_s = timeout_s
        self.moved = 0

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Prefetch the priors of one order; other workflow events are passed over.

        Raises:
            InvalidArgumentError: the event cannot be decoded (dead-lettered).
            UnavailableError: the archive cannot be reached (retried).
        """
        if header(record, "ce_type") != _ORDER_PLACED:
            return
        try:
            order = workflow_pb.OrderPlaced.FromString(record.value or b"")
        except DecodeError as exc:
            raise InvalidArgumentError(f"undecodable OrderPlaced: {exc}") from exc
        config = self.config.get(order.origin.tenant)
        if config is None or not order.patient.patient_id:
            return
        moved = await asyncio.to_thread(self._prefetch, config, order)
        self.moved += moved
        log.info("priors prefetched", extra={"tenant": order.origin.tenant, "studies": moved})

    def _prefetch(self, config: Prefetch, order: workflow_pb.OrderPlaced) -> int:
        """Find and move the priors; blocking (a worker thread). Returns how many moved."""
        assoc = self._associate(config)
        try:
            priors = self._find(assoc, config, order)
            moved = 0
            for prior in priors:
                if self._move(assoc, config, prior.study_instance_uid):
                    moved += 1
                    ROUTE_PREFETCHED.labels("moved").inc()
                else:
                    ROUTE_PREFETCHED.labels("failed").inc()
            return moved
        finally:
            if assoc.is_established:
                assoc.release()

    def _associate(self, config: Prefetch) -> Association:
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.timeout_s
        little_endian = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, little_endian)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove, little_endian)
        archive = config.archive
        try:
            assoc = ae.associate(archive.host, archive.port, ae_title=archive.ae_title)
        except OSError as exc:
            raise UnavailableError(f"prefetch archive unreachable: {exc}") from exc
        if not assoc.is_established:
            raise UnavailableError("prefetch archive refused or aborted the association")
        return assoc

    def _find(
        self, assoc: Association, config: Prefetch, order: workflow_pb.OrderPlaced
    ) -> list[Prior]:
        """The patient's studies at the archive, most recent first (PS3.4 C.6.2.1.2: the
        STUDY level of the Study Root model, Patient ID as an attribute of the study)."""
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = order.patient.patient_id
        if config.match_issuer and order.patient.issuer_of_patient_id:
            query.IssuerOfPatientID = order.patient.issuer_of_patient_id
        query.StudyInstanceUID = ""
        query.StudyDate = ""
        query.ModalitiesInStudy = ""
        priors: list[Prior] = []
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            if not status or "Status" not in status:
                raise UnavailableError("the archive did not answer the C-FIND")
            code = int(status.Status)
            if code in _PENDING and identifier is not None:
                uid = str(identifier.get("StudyInstanceUID", "") or "")
                modalities = identifier.get("ModalitiesInStudy", "") or []
                if isinstance(modalities, str):
                    modalities = [modalities] if modalities else []
                priors.append(
                    Prior(uid, str(identifier.get("StudyDate", "") or ""), tuple(modalities))
                )
            elif code not in _PENDING and code != 0x0000:
                raise UnavailableError(f"the archive answered the C-FIND with 0x{code:04X}")
        ordered = order.step.study_instance_uid
        wanted = set(config.modalities)
        kept = [
            p
            for p in priors
            if p.study_instance_uid
            and p.study_instance_uid != ordered
            and (not wanted or wanted & set(p.modalities))
        ]
        kept.sort(key=lambda p: p.study_date, reverse=True)
        return kept[: config.max_studies]

    def _move(self, assoc: Association, config: Prefetch, study_instance_uid: str) -> bool:
        """Ask the archive to send one study to cloudpacs (PS3.4 C.4.2); True when the final
        status says it was sent (success, or warning: some sub-operations failed)."""
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_instance_uid
        final: int | None = None
        for status, _ in assoc.send_c_move(
            identifier, config.move_destination, StudyRootQueryRetrieveInformationModelMove
        ):
            if not status or "Status" not in status:
                raise UnavailableError("the archive did not answer the C-MOVE")
            final = int(status.Status)
        if final not in _MOVE_DONE:
            log.warning(
                "prior not moved",
                extra={"status": f"0x{final:04X}" if final is not None else "none"},
            )
            return False
        return True
