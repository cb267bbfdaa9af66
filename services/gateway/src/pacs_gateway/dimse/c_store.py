"""The Storage Service Class SCP: C-STORE (PS3.4 Annex B).

The dataset is taken as encoded by the sender (``event.encoded_dataset()``: preamble, file meta
built from the command and presentation context, then the dataset bytes untouched), its
identifiers are read without pixel data, and it goes straight to S3 through a storage write
grant, committed with ``CommitWrite`` (or through ``storage.Put`` with ``write_path=stream``).
The response is Success only after the commit returned (PS3.4 B.2.3 lets us refuse with "out
of resources" so that the sender keeps the image and retries); every failure is a status, never
an exception escaping into pynetdicom.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pacs.type.v1 import instance_pb2
from pacs_common import audit_events
from pacs_common.dicom import UnreadableDicomError, instance_ref_of
from pacs_common.errors import InvalidArgumentError, PacsError
from pacs_common.metrics import DICOM_CSTORE_BYTES, DICOM_CSTORE_DURATION
from prometheus_client import Histogram
from pydicom.dataset import Dataset

from pacs_gateway.admission import CallerOf
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.handler_base import DimseFailure, DimseHandler
from pacs_gateway.duplicates import DuplicateInstanceError
from pacs_gateway.index_lag import IndexLagGate
from pacs_gateway.ingest import Ingest
from pacs_gateway.io_loop import IoLoop

log = logging.getLogger(__name__)


class StoreScp(DimseHandler):
    """Handles EVT_C_STORE for every storage SOP class."""

    operation = "C-STORE"
    required_role = "ingest"
    unavailable_comment = "storage unavailable, retry later"
    invalid_status = codes.UNEXPECTED_FAILURE  # storage refused the object itself
    duration: ClassVar[Histogram | None] = DICOM_CSTORE_DURATION

    def __init__(
        self,
        ingest: Ingest,
        io: IoLoop,
        caller_of: CallerOf,
        timeout_s: float,
        index_gate: IndexLagGate | None = None,
    ) -> None:
        """Args:
        index_gate: holds an instance while the indexer is behind (None: never), before
            anything is written (:mod:`pacs_gateway.index_lag`).
        """
        super().__init__(io, caller_of, timeout_s)
        self._ingest = ingest
        self._index_gate = index_gate

    def handle(self, event: Any) -> Dataset:
        """EVT_C_STORE handler: the C-STORE response status (PS3.4 B.2.3)."""
        return self.answer(lambda: self._store(event))

    def _store(self, event: Any) -> Dataset:
        instance, part10 = self._checked(event)
        calling_ae = self.caller(event).calling_ae_title
        if self._index_gate is not None and self._index_gate.holding:
            self.run(self._index_gate.admit())
        try:
            stored = self.run(self._ingest.put(instance, part10, sending_ae_title=calling_ae))
        except DuplicateInstanceError as exc:
            raise DimseFailure(codes.DUPLICATE_SOP_INSTANCE, exc.message) from exc
        except PacsError as exc:
            log.warning(
                "storage did not take an instance",
                extra={"sop_instance_uid": instance.sop_instance_uid, "error": exc.message},
            )
            raise
        DICOM_CSTORE_BYTES.inc(len(part10))
        audit_events.emit(
            audit_events.dicom_stored(self._caller_of(event.assoc), event, instance, part10)
        )
        log.debug(
            "instance stored",
            extra={
                "sop_instance_uid": instance.sop_instance_uid,
                "already_present": stored.already_present,
            },
        )
        if stored.new_version:
            return codes.status(codes.STORED_AS_NEW_VERSION, "stored as a new version")
        return codes.status(codes.SUCCESS)

    def _checked(self, event: Any) -> tuple[instance_pb2.InstanceRef, bytes]:
        """The instance address and Part 10 bytes of a C-STORE request.

        Raises:
            DimseFailure: the request is refused before storage is called (PS3.4 B.2.3).
        """
        caller = self.caller(event)
        request = event.request
        try:
            part10 = event.encoded_dataset()
            instance = instance_ref_of(part10, caller.tenant)
        except UnreadableDicomError as exc:
            raise DimseFailure(codes.UNREADABLE_DATASET, "dataset cannot be parsed") from exc
        except InvalidArgumentError as exc:
            raise DimseFailure(codes.INVALID_IDENTIFIERS, exc.message) from exc
        if instance.sop_class_uid != str(request.AffectedSOPClassUID):
            raise DimseFailure(
                codes.DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOPClassUID differs from the command"
            )
        if instance.sop_instance_uid != str(request.AffectedSOPInstanceUID):
            raise DimseFailure(codes.INSTANCE_MISMATCH, "SOPInstanceUID differs from command")
        return instance, part10
