"""The Modality Performed Procedure Step SCP (PS3.4 F.7): N-CREATE and N-SET.

A modality reports that it started a scheduled step (N-CREATE, status IN PROGRESS) and later
that it completed or discontinued it (N-SET). The gateway checks what PS3.4 F.7.2 requires of
the request, then hands it to the indexer's ``RecordPerformedProcedureStep``, which records the
step, moves the worklist item's status and publishes ``ProcedureStepUpdated``, all within the
caller's tenant. The indexer's refusals map to the statuses F.7.2.1.2 and F.7.2.2.2 name.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.query.v1 import query_service_pb2_grpc as query_grpc
from pacs_common.clients.errors import from_exception
from pacs_common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from pydicom.dataset import Dataset
from pydicom.uid import UID

from pacs_gateway.admission import CallerOf
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.handler_base import DimseFailure, DimseHandler
from pacs_gateway.io_loop import IoLoop

log = logging.getLogger(__name__)

MODALITY_PERFORMED_PROCEDURE_STEP = UID("1.2.840.10008.3.1.2.3.3")
"""Modality Performed Procedure Step SOP Class (PS3.4 F.7.1)."""

PROCESSING_FAILURE = 0x0110
"""PS3.7 C.4: Processing failure (F.7.2.2.2: the step may no longer be updated)."""
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
INVALID_ATTRIBUTE_VALUE = 0x0106
MISSING_ATTRIBUTE_VALUE = 0x0121
RESOURCE_LIMITATION = 0x0213
_FINAL = ("COMPLETED", "DISCONTINUED")


class PerformedStepRecorder:
    """Sends MPPS operations to the indexer."""

    def __init__(self, stub: query_grpc.QueryServiceAsyncStub, timeout_s: float) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def record(
        self,
        tenant: str,
        uid: str,
        operation: query_pb.PerformedStepOperation.ValueType,
        dataset: Dataset,
    ) -> query_pb.RecordPerformedProcedureStepResponse:
        """Record one operation.

        Raises:
            PacsError: the indexer's refusal, translated.
        """
        request = query_pb.RecordPerformedProcedureStepRequest(
            tenant=tenant, sop_instance_uid=uid, operation=operation, dataset=dataset.to_json()
        )
        try:
            response: query_pb.RecordPerformedProcedureStepResponse = (
                await self._stub.RecordPerformedProcedureStep(request, timeout=self._timeout_s)
            )
        except (grpc.RpcError, ConnectionError, TimeoutError) as exc:
            raise from_exception(exc, "indexer") from exc
        return response


class MppsScp(DimseHandler):
    """Handles EVT_N_CREATE and EVT_N_SET for the MPPS SOP class."""

    operation = "MPPS"
    required_role = "ingest"
    unavailable_status = RESOURCE_LIMITATION

    def __init__(
        self, recorder: PerformedStepRecorder, *, io: IoLoop, caller_of: CallerOf, timeout_s: float
    ) -> None:
        super().__init__(io, caller_of, timeout_s)
        self._recorder = recorder

    def failure(self, exc: BaseException) -> Dataset:
        """The indexer's refusals as the statuses of PS3.4 F.7.2."""
        for kind, status in (
            (AlreadyExistsError, DUPLICATE_SOP_INSTANCE),
            (NotFoundError, NO_SUCH_OBJECT_INSTANCE),
            (FailedPreconditionError, PROCESSING_FAILURE),
            (InvalidArgumentError, INVALID_ATTRIBUTE_VALUE),
        ):
            if isinstance(exc, kind):
                return codes.status(status, exc.message)
        if isinstance(exc, UnavailableError | TimeoutError):
            return codes.status(RESOURCE_LIMITATION, "index unavailable, retry later")
        return super().failure(exc)

    def handle_create(self, event: Any) -> tuple[Dataset, Dataset | None]:
        """EVT_N_CREATE (PS3.4 F.7.2.1)."""
        return self._respond(lambda: self._create(event))

    def handle_set(self, event: Any) -> tuple[Dataset, Dataset | None]:
        """EVT_N_SET (PS3.4 F.7.2.2)."""
        return self._respond(lambda: self._set(event))

    def _respond(self, work: Any) -> tuple[Dataset, Dataset | None]:
        result: list[Dataset | None] = [None]

        def respond() -> Dataset:
            result[0] = work()
            return codes.status(codes.SUCCESS)

        status = self.answer(respond)
        return status, result[0] if int(status.Status) == codes.SUCCESS else None

    def _create(self, event: Any) -> Dataset:
        caller = self.caller(event)
        uid = str(event.request.AffectedSOPInstanceUID or "")
        if not uid:
            # The SCU must name the instance here: the gateway does not create MPPS UIDs.
            raise DimseFailure(MISSING_ATTRIBUTE_VALUE, "Affected SOP Instance UID is required")
        attributes: Dataset = event.attribute_list
        status = str(attributes.get("PerformedProcedureStepStatus", ""))
        if status != "IN PROGRESS":
            raise DimseFailure(INVALID_ATTRIBUTE_VALUE, "status must be IN PROGRESS on N-CREATE")
        self.run(
            self._recorder.record(
                caller.tenant, uid, query_pb.PERFORMED_STEP_OPERATION_CREATE, attributes
            )
        )
        return attributes

    def _set(self, event: Any) -> Dataset:
        caller = self.caller(event)
        uid = str(event.request.RequestedSOPInstanceUID or "")
        changes: Dataset = event.modification_list
        status = str(changes.get("PerformedProcedureStepStatus", "") or "")
        if status and status not in ("IN PROGRESS", *_FINAL):
            raise DimseFailure(INVALID_ATTRIBUTE_VALUE, f"status {status!r} is not valid")
        self.run(
            self._recorder.record(
                caller.tenant, uid, query_pb.PERFORMED_STEP_OPERATION_SET, changes
            )
        )
        return changes
