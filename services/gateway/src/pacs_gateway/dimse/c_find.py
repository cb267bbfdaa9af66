"""The Query/Retrieve Service Class SCP, C-FIND part (PS3.4 C.4.1), answered from the index.

STUDY, SERIES and IMAGE levels map to the indexer's FindStudies, FindSeries and FindInstances,
paged so that a broad query streams pending responses instead of building one huge answer.
The PATIENT level (Patient Root) has no index RPC: it is answered by grouping FindStudies
results by patient (Patient ID plus Issuer of Patient ID), counting related studies, series and
instances when those keys are asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc
from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.query.v1 import query_service_pb2_grpc as query_grpc
from pacs_common import audit_events
from pacs_common.clients.errors import from_exception
from pydicom.dataset import Dataset

from pacs_gateway.admission import CallerOf
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.find_identifier import (
    FindRequest,
    InvalidIdentifierError,
    dataset_of_json,
    find_request_of,
    levels_of,
    response_of,
)
from pacs_gateway.dimse.handler_base import DimseHandler
from pacs_gateway.io_loop import IoLoop

log = logging.getLogger(__name__)

FindResult = tuple[int | Dataset, Dataset | None]

PATIENT_COUNTS = {
    "NumberOfPatientRelatedStudies": None,
    "NumberOfPatientRelatedSeries": "NumberOfStudyRelatedSeries",
    "NumberOfPatientRelatedInstances": "NumberOfStudyRelatedInstances",
}
# Patient-level attributes a study-level index result carries (PS3.4 C.6.1.1.2, Table C.6-1).
PATIENT_LEVEL_KEYS = ("PatientID", "IssuerOfPatientID")


class Cancellation:
    """Whether a C-CANCEL arrived for one C-FIND, remembered once seen.

    pynetdicom's ``Event.is_cancelled`` forgets the C-CANCEL when it answers True, so a
    second look would miss it and the C-FIND would end with Success after only some of the
    matches, which claims that every match was sent (PS3.4 C.4.1.3.1).
    """

    def __init__(self, event: Any) -> None:
        self._event = event
        self._seen = False

    def __call__(self) -> bool:
        self._seen = self._seen or bool(self._event.is_cancelled)
        return self._seen


class Finder:
    """Pages through the index for one level."""

    def __init__(self, stub: query_grpc.QueryServiceAsyncStub, timeout_s: float) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def find(self, level: str, query: query_pb.Query) -> tuple[list[str], int]:
        """One page of DICOM JSON results and the total number of matches.

        Raises:
            UnavailableError: the indexer is unreachable.
            InvalidArgumentError: the indexer cannot evaluate the query.
            PacsError: any other failure.
        """
        try:
            response: (
                query_pb.FindStudiesResponse
                | query_pb.FindSeriesResponse
                | query_pb.FindInstancesResponse
            )
            if level in ("STUDY", "PATIENT"):
                response = await self._stub.FindStudies(
                    query_pb.FindStudiesRequest(query=query), timeout=self._timeout_s
                )
            elif level == "SERIES":
                response = await self._stub.FindSeries(
                    query_pb.FindSeriesRequest(query=query), timeout=self._timeout_s
                )
            else:
                response = await self._stub.FindInstances(
                    query_pb.FindInstancesRequest(query=query), timeout=self._timeout_s
                )
        except (grpc.RpcError, ConnectionError, TimeoutError) as exc:
            raise from_exception(exc, "indexer") from exc
        return list(response.datasets), int(response.total_count)


class FindScp(DimseHandler):
    """Handles EVT_C_FIND for the Patient Root and Study Root models."""

    operation = "C-FIND"
    required_role = "query"
    unavailable_comment = "index unavailable, retry later"

    def __init__(
        self,
        finder: Finder,
        *,
        io: IoLoop,
        caller_of: CallerOf,
        ae_title: str,
        page_size: int,
        timeout_s: float,
    ) -> None:
        super().__init__(io, caller_of, timeout_s)
        self._finder = finder
        self._ae_title = ae_title
        self._page_size = page_size

    def handle(self, event: Any) -> Iterator[FindResult]:
        """EVT_C_FIND handler: pending matches, then a final status (PS3.4 C.4.1.1.4)."""
        return self.answer_each(lambda: self._find(event))

    def _find(self, event: Any) -> Iterator[FindResult]:
        caller = self.caller(event)
        model = str(event.request.AffectedSOPClassUID)
        try:
            identifier = event.identifier
        except Exception as exc:
            raise InvalidIdentifierError("identifier cannot be decoded") from exc
        request = find_request_of(identifier, model)
        audit_events.emit(
            audit_events.dicom_query(
                caller,
                self._ae_title,
                model,
                event.request.Identifier.getvalue(),
                True,
                patient_id=identifier.get("PatientID", ""),
            )
        )
        levels = levels_of(model)
        cancelled = Cancellation(event)
        if request.level == "PATIENT":
            results: Iterator[Dataset] = self._patients(cancelled, request, caller.tenant)
        else:
            results = self._pages(cancelled, request, caller.tenant)
        for result in results:
            if cancelled():
                yield codes.CANCEL, None
                return
            yield codes.PENDING, response_of(result, request, self._ae_title, levels)
        if cancelled():  # also when paging stopped on the C-CANCEL (PS3.4 C.4.1.3.1)
            yield codes.CANCEL, None

    def _pages(
        self, cancelled: Cancellation, request: FindRequest, tenant: str
    ) -> Iterator[Dataset]:
        """Every match of ``request``, fetched one page at a time until cancelled."""
        offset = 0
        while not cancelled():
            query = request.query(tenant, limit=self._page_size, offset=offset)
            page, total = self.run(self._finder.find(request.level, query))
            for text in page:
                yield dataset_of_json(text)
            offset += len(page)
            if not page or offset >= total:
                return

    def _patients(
        self, cancelled: Cancellation, request: FindRequest, tenant: str
    ) -> Iterator[Dataset]:
        """PATIENT level: study matches grouped by patient, with the related counts."""
        wanted_counts = [k for k in PATIENT_COUNTS if k in request.identifier]
        match = dict(request.match)
        for keyword in wanted_counts:
            match.pop(keyword, None)
        for keyword in PATIENT_LEVEL_KEYS:
            match.setdefault(keyword, "")
        for count_keyword in PATIENT_COUNTS.values():
            if count_keyword:
                match.setdefault(count_keyword, "")
        study_request = FindRequest(
            level="STUDY",
            identifier=request.identifier,
            match=match,
            return_keys=request.return_keys,
        )
        patients: dict[tuple[str, str], Dataset] = {}
        counts: dict[tuple[str, str], list[int]] = {}
        for study in self._pages(cancelled, study_request, tenant):
            key = (str(study.get("PatientID", "")), str(study.get("IssuerOfPatientID", "")))
            patients.setdefault(key, study)
            totals = counts.setdefault(key, [0, 0, 0])
            totals[0] += 1
            totals[1] += _int(study.get("NumberOfStudyRelatedSeries"))
            totals[2] += _int(study.get("NumberOfStudyRelatedInstances"))
        for key, patient in patients.items():
            result = Dataset()
            for element in patient:
                result[element.tag] = element
            studies, series, instances = counts[key]
            result.NumberOfPatientRelatedStudies = studies
            result.NumberOfPatientRelatedSeries = series
            result.NumberOfPatientRelatedInstances = instances
            yield result


def _int(value: Any) -> int:
    try:
        return int(value) if value not in (None, "") else 0
    except (TypeError, ValueError):
        return 0
