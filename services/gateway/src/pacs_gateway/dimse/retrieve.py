"""The Query/Retrieve Service Class SCP, C-MOVE and C-GET parts (PS3.4 C.4.2, C.4.3).

pynetdicom drives the sub-operations: the handlers only say where to (C-MOVE: a destination
from the site registry, in the caller's tenant), how many, and then hand over one dataset at a
time; pynetdicom sends each with C-STORE, sends the pending responses with the remaining /
completed / failed / warning counts, and builds the final status with the Failed SOP Instance
UID List. C-MOVE opens an association to the destination; C-GET sends back over the caller's
own association on the storage contexts where it accepted the SCP role (PS3.7 D.3.3.4).

Each instance goes as stored when the receiver accepted its syntax; otherwise the transcoder
converts it into an accepted one (:func:`pacs_common.transfer_syntaxes.choose`): lossless always,
lossy only for an already lossy instance or, with ``retrieve_lossy_fallback``, when the receiver
accepted nothing lossless. The gateway never decodes pixels itself. Instances travel through a
temporary file each, sent chunk by chunk (:class:`~pacs_gateway.dimse.retrieve_request.StoredFile`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pacs.type.v1 import instance_pb2
from pacs_common import audit_events
from pacs_common.errors import PacsError
from pacs_common.transfer_syntaxes import Choice, choose
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom.presentation import build_context

from pacs_gateway.admission import CallerOf
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.handler_base import DimseHandler
from pacs_gateway.dimse.retrieve_request import (
    UNCOMPRESSED_OUT,
    Retriever,
    StoredFile,
    accepted_syntaxes,
    proposed_contexts,
    retrieve_request_of,
    send_files_chunked,
    unsendable,
)
from pacs_gateway.io_loop import IoLoop
from pacs_gateway.outbound import association_kwargs
from pacs_gateway.registry import DestinationOf

log = logging.getLogger(__name__)

Located = tuple[Dataset | None, list[instance_pb2.InstanceRef]]


class RetrieveScp(DimseHandler):
    """Handles EVT_C_MOVE and EVT_C_GET."""

    operation = "C-MOVE/C-GET"
    required_role = "retrieve"
    unavailable_status = codes.UNABLE_TO_CALCULATE_MATCHES
    unavailable_comment = "index or storage unavailable"

    def __init__(
        self,
        retriever: Retriever,
        io: IoLoop,
        caller_of: CallerOf,
        destination_of: DestinationOf,
        timeout_s: float,
        *,
        lossy_fallback: bool = False,
    ) -> None:
        super().__init__(io, caller_of, timeout_s)
        self._retriever = retriever
        self._destination_of = destination_of
        self._lossy_fallback = lossy_fallback

    def handle_move(self, event: Any) -> Iterator[Any]:
        """EVT_C_MOVE: destination, number of sub-operations, then one dataset per instance."""
        caller = self._caller_of(event.assoc)
        wanted = str(event.move_destination or "").strip()
        destination = self._destination_of(caller.tenant, wanted) if caller else None
        if caller is None or destination is None:
            log.info("C-MOVE to an unregistered destination", extra={"move_destination": wanted})
            yield None, None  # pynetdicom answers Move Destination unknown (A801)
            return
        failure, refs = self._locate(event)
        sub_association: dict[str, Any] = {}

        def accepted(accept_event: Any) -> None:
            sub_association["assoc"] = accept_event.assoc
            send_files_chunked(accept_event.assoc)

        contexts = proposed_contexts(refs) if refs else [build_context(codes.VERIFICATION)]
        yield (
            destination.host,
            destination.port,
            association_kwargs(destination, contexts, accepted),
        )
        if failure is not None:
            # pynetdicom only sends a failure status once a sub-operation was announced.
            yield 1
            yield failure, None
            return
        yield len(refs)
        assoc = sub_association.get("assoc")
        offered = list(assoc.accepted_contexts) if assoc is not None else []
        yield from audit_events.audited_retrieve(
            self._send_all(event, refs, offered), caller, event, refs, move=True
        )

    def handle_get(self, event: Any) -> Iterator[Any]:
        """EVT_C_GET: number of sub-operations, then one dataset per instance."""
        failure, refs = self._locate(event)
        if failure is not None:
            yield 1
            yield failure, None
            return
        yield len(refs)
        # Our SCU-role storage contexts: those where the requestor accepted to be the SCP.
        offered = [cx for cx in event.assoc.accepted_contexts if cx.as_scu]
        send_files_chunked(event.assoc)
        yield from audit_events.audited_retrieve(
            self._send_all(event, refs, offered), self._caller_of(event.assoc), event, refs
        )

    def _locate(self, event: Any) -> Located:
        """The instances to send, or the failure status to answer with (also when the caller
        may not retrieve: see :meth:`DimseHandler.caller`)."""
        try:
            caller = self.caller(event)
            request = retrieve_request_of(event.identifier, str(event.request.AffectedSOPClassUID))
            return None, self.run(self._retriever.locate(caller.tenant, request))
        except Exception as exc:
            return self.failure(exc), []

    def _send_all(
        self, event: Any, refs: list[instance_pb2.InstanceRef], offered: list[Any]
    ) -> Iterator[tuple[int, Dataset | None]]:
        """One dataset per instance; each file is removed once pynetdicom asked for the next
        (it was sent by then) or when the operation ends."""
        files: list[Path] = []
        try:
            for ref in refs:
                for sent in files:
                    sent.unlink(missing_ok=True)
                files.clear()
                if event.is_cancelled:
                    yield codes.CANCEL, None
                    return
                dataset = self._dataset_for(ref, offered)
                if isinstance(dataset, StoredFile):
                    files.append(dataset.part10_path)
                yield codes.PENDING, dataset
        finally:
            for sent in files:
                sent.unlink(missing_ok=True)

    def _dataset_for(self, ref: instance_pb2.InstanceRef, offered: list[Any]) -> Dataset:
        """The instance as a file in a syntax the receiver accepted, or an unsendable dataset
        (the sub-operation fails and is listed)."""
        accepted = accepted_syntaxes(offered, ref.sop_class_uid)
        if not ref.transfer_syntax_uid or not accepted:
            return unsendable(ref)
        choice = choose(ref.transfer_syntax_uid, accepted, lossy_fallback=self._lossy_fallback)
        if choice is None:
            log.warning(
                "no accepted transfer syntax can carry the instance",
                extra={"sop_instance_uid": ref.sop_instance_uid},
            )
            return unsendable(ref)
        # Between the uncompressed little endian syntaxes pynetdicom re-encodes a dataset itself:
        # without a transcoder that is still possible, at the price of the object in memory.
        in_memory = (
            choice.transcode
            and not self._retriever.can_transcode
            and {ref.transfer_syntax_uid, choice.transfer_syntax_uid} <= set(UNCOMPRESSED_OUT)
        )
        if in_memory:
            choice = Choice(ref.transfer_syntax_uid, transcode=False)
        try:
            path = self.run(self._retriever.fetch_to_file(ref, choice))
            if in_memory:
                try:
                    return dcmread(path)
                finally:
                    path.unlink(missing_ok=True)
        except (PacsError, TimeoutError) as exc:
            log.warning(
                "instance not sent",
                extra={"sop_instance_uid": ref.sop_instance_uid, "error": str(exc)},
            )
            return unsendable(ref)
        except Exception:
            log.exception("unexpected error preparing an instance")
            return unsendable(ref)
        return StoredFile(path, ref)
