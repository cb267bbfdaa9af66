"""The Modality Worklist SCP: Modality Worklist Information Model - FIND (PS3.4 K).

A modality asks for its scheduled procedure steps (typically: its own Scheduled Station AE
Title, today's date, its modality); the identifier's Scheduled Procedure Step Sequence item is
flattened into matching keys and the indexer's ``FindWorklist`` answers from the steps the HL7
orders placed, always within the caller's tenant. Each match comes back as a pending response
holding exactly the keys the identifier asked for (PS3.4 C.2.2.1.3; a sequence key asked with
an empty item returns the whole item, K.2.2.1.3), then Success.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.query.v1 import query_service_pb2_grpc as query_grpc
from pacs_common.clients.errors import from_exception
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from pacs_gateway.admission import CallerOf
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.c_find import Cancellation, FindResult
from pacs_gateway.dimse.find_identifier import InvalidIdentifierError, dataset_of_json
from pacs_gateway.dimse.handler_base import DimseHandler
from pacs_gateway.io_loop import IoLoop

log = logging.getLogger(__name__)

MODALITY_WORKLIST_FIND = UID("1.2.840.10008.5.1.4.31")
"""Modality Worklist Information Model - FIND SOP Class (PS3.4 K.6.1.1)."""
_SPS = "ScheduledProcedureStepSequence"


class WorklistFinder:
    """Pages of worklist items from the indexer."""

    def __init__(self, stub: query_grpc.QueryServiceAsyncStub, timeout_s: float) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def find(self, query: query_pb.Query) -> tuple[list[str], int]:
        """One page of worklist items (DICOM JSON) and the number of matches.

        Raises:
            PacsError: the indexer's error, translated (UnavailableError when unreachable).
        """
        try:
            response = await self._stub.FindWorklist(
                query_pb.FindWorklistRequest(query=query), timeout=self._timeout_s
            )
        except (grpc.RpcError, ConnectionError, TimeoutError) as exc:
            raise from_exception(exc, "indexer") from exc
        return list(response.datasets), int(response.total_count)


def matching_keys(identifier: Dataset) -> dict[str, str]:
    """The identifier's attributes as keyword -> matching value, with the first Scheduled
    Procedure Step Sequence item's attributes beside the top-level ones."""
    match: dict[str, str] = {}
    for element in identifier:
        if element.keyword == _SPS:
            for item in element.value or []:
                match.update(_flat(item))
                break
        elif element.VR != "SQ" and element.keyword:
            match[element.keyword] = _text(element)
    return match


def _flat(item: Dataset) -> dict[str, str]:
    return {e.keyword: _text(e) for e in item if e.VR != "SQ" and e.keyword}


def _text(element: DataElement) -> str:
    value = element.value
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def trimmed(result: Dataset, identifier: Dataset) -> Dataset:
    """``result`` reduced to (and completed with) the keys of ``identifier``."""
    out = Dataset()
    for element in identifier:
        if element.tag in (0x00080005,):
            continue
        found = result.get(element.tag)
        if element.VR == "SQ":
            requested = element.value[0] if element.value else None
            items = found.value if found is not None and found.VR == "SQ" else []
            if requested is None or len(requested) == 0:
                out.add(DataElement(element.tag, "SQ", Sequence(list(items))))
            else:
                out.add(
                    DataElement(element.tag, "SQ", Sequence([trimmed(i, requested) for i in items]))
                )
        elif found is not None:
            out.add(found)
        else:
            out.add(DataElement(element.tag, element.VR, None))
    out.SpecificCharacterSet = "ISO_IR 192"
    return out


class WorklistScp(DimseHandler):
    """Handles EVT_C_FIND for the Modality Worklist information model."""

    operation = "C-FIND MWL"
    required_role = "query"
    unavailable_comment = "worklist unavailable, retry later"

    def __init__(
        self,
        finder: WorklistFinder,
        *,
        io: IoLoop,
        caller_of: CallerOf,
        page_size: int,
        timeout_s: float,
    ) -> None:
        super().__init__(io, caller_of, timeout_s)
        self._finder = finder
        self._page_size = page_size

    def handle(self, event: Any) -> Iterator[FindResult]:
        """EVT_C_FIND handler: one pending response per item, then a final status."""
        return self.answer_each(lambda: self._find(event))

    def _find(self, event: Any) -> Iterator[FindResult]:
        caller = self.caller(event)
        try:
            identifier = event.identifier
        except Exception as exc:
            raise InvalidIdentifierError("identifier cannot be decoded") from exc
        match = matching_keys(identifier)
        cancelled = Cancellation(event)
        offset = 0
        while not cancelled():
            query = query_pb.Query(
                tenant=caller.tenant, match=match, limit=self._page_size, offset=offset
            )
            page, total = self.run(self._finder.find(query))
            for text in page:
                if cancelled():
                    break
                yield codes.PENDING, trimmed(dataset_of_json(text), identifier)
            offset += len(page)
            if not page or offset >= total:
                break
        if cancelled():
            yield codes.CANCEL, None


def route_find(
    worklist: Callable[[Any], Iterator[FindResult]], other: Callable[[Any], Iterator[FindResult]]
) -> Callable[[Any], Iterator[FindResult]]:
    """One EVT_C_FIND handler: worklist queries to ``worklist``, Q/R ones to ``other``."""

    def handle(event: Any) -> Iterator[FindResult]:
        if str(event.request.AffectedSOPClassUID) == MODALITY_WORKLIST_FIND:
            return worklist(event)
        return other(event)

    return handle
