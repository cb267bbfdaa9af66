"""The Storage Service Class SCP: C-STORE (PS3.4 Annex B).

The dataset is taken as encoded by the sender (``event.encoded_dataset()``: preamble, file meta
built from the command and presentation context, then the dataset bytes untouched), its
identifiers are read without pixel data, and it is streamed to ``storage.Put``. The response is
Success only after Put returned (PS3.4 B.2.3 lets us refuse with "out of resources" so that the
sender keeps the image and retries); every failure is a status, never an exception escaping
into pynetdicom.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pacs.type.v1 import instance_pb2
from pacs_common.dicom import UnreadableDicomError, instance_ref_of
from pacs_common.errors import InvalidArgumentError, PacsError, UnavailableError
from pacs_common.metrics import DICOM_CSTORE_BYTES, DICOM_CSTORE_DURATION
from pydicom.dataset import Dataset

from pacs_gateway import status
from pacs_gateway.admission import Caller
from pacs_gateway.ingest import Ingest
from pacs_gateway.io_loop import IoLoop

log = logging.getLogger(__name__)


class StoreScp:
    """Handles EVT_C_STORE for every storage SOP class."""

    def __init__(
        self,
        ingest: Ingest,
        io: IoLoop,
        caller_of: Callable[[Any], Caller | None],
        timeout_s: float,
    ) -> None:
        self._ingest = ingest
        self._io = io
        self._caller_of = caller_of
        # The io loop applies the storage deadline; this one only guards against a stuck loop.
        self._timeout_s = timeout_s + 5

    def handle(self, event: Any) -> Dataset:
        """EVT_C_STORE handler: the C-STORE response status (PS3.4 B.2.3)."""
        started = time.perf_counter()
        try:
            instance, part10 = self._checked(event)
            result = self._put(instance, part10)
            if result.Status == status.SUCCESS:
                DICOM_CSTORE_BYTES.inc(len(part10))
            DICOM_CSTORE_DURATION.observe(time.perf_counter() - started)
            return result
        except _RefusedError as refused:
            return refused.status
        except Exception:
            log.exception("unexpected error while storing an instance")
            return status.status(status.UNEXPECTED_FAILURE, "internal error")

    def _checked(self, event: Any) -> tuple[instance_pb2.InstanceRef, bytes]:
        """The instance address and Part 10 bytes of a C-STORE request, or a refusal."""
        caller = self._caller_of(event.assoc)
        if caller is None:
            raise _RefusedError(status.NOT_AUTHORIZED, "association not admitted")
        request = event.request
        try:
            part10 = event.encoded_dataset()
            instance = instance_ref_of(part10, caller.tenant)
        except UnreadableDicomError as exc:
            raise _RefusedError(status.UNREADABLE_DATASET, "dataset cannot be parsed") from exc
        except InvalidArgumentError as exc:
            raise _RefusedError(status.INVALID_IDENTIFIERS, exc.message) from exc
        if instance.sop_class_uid != str(request.AffectedSOPClassUID):
            raise _RefusedError(
                status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOPClassUID differs from the command"
            )
        if instance.sop_instance_uid != str(request.AffectedSOPInstanceUID):
            raise _RefusedError(status.INSTANCE_MISMATCH, "SOPInstanceUID differs from command")
        return instance, part10

    def _put(self, instance: instance_pb2.InstanceRef, part10: bytes) -> Dataset:
        """Store through the io loop; Success only once storage returned."""
        try:
            stored = self._io.run(self._ingest.put(instance, part10), timeout=self._timeout_s)
        except (UnavailableError, TimeoutError) as exc:
            log.warning(
                "storage unavailable; answering out of resources",
                extra={"sop_instance_uid": instance.sop_instance_uid, "error": str(exc)},
            )
            return status.status(status.OUT_OF_RESOURCES, "storage unavailable, retry later")
        except PacsError as exc:
            log.warning(
                "storage refused an instance",
                extra={"sop_instance_uid": instance.sop_instance_uid, "error": exc.message},
            )
            return status.status(status.UNEXPECTED_FAILURE, "storage refused the instance")
        log.debug(
            "instance stored",
            extra={
                "sop_instance_uid": instance.sop_instance_uid,
                "already_present": stored.already_present,
            },
        )
        return status.status(status.SUCCESS)


class _RefusedError(Exception):
    """A C-STORE request refused before storage was called."""

    def __init__(self, code: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status.status(code, comment)
