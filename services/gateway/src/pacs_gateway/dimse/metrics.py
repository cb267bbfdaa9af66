"""Prometheus metrics of the DICOM side, recorded from pynetdicom's notification events.

The metric objects are the shared ones of :mod:`pacs_common.metrics` (dashboards query those
names). Operations are counted from the responses the gateway sends (EVT_DIMSE_SENT), so every
DIMSE service is covered in one place, whatever handler produced the status; pending responses
are not counted, only final ones.
"""

from __future__ import annotations

import threading
from typing import Any

from pacs_common.metrics import (
    DICOM_ASSOCIATIONS_OPEN,
    DICOM_ASSOCIATIONS_REJECTED,
    DIMSE_OPERATIONS,
)
from pynetdicom import evt
from pynetdicom.status import code_to_category


def status_class(code: int) -> str:
    """success | warning | failure | cancel | pending for a DIMSE status code (PS3.7 C.1-C.5,
    as pynetdicom classifies it); a code of no known class counts as a failure."""
    category = code_to_category(code).lower()
    return "failure" if category == "unknown" else category


def operation_of(message: Any) -> str | None:
    """``C-STORE`` for a C_STORE_RSP message; None for requests (what we send as SCU)."""
    name = type(message).__name__
    if not name.endswith("_RSP"):
        return None
    return name[: -len("_RSP")].replace("_", "-")


class DicomMetrics:
    """Event handlers that keep the DICOM metrics (bind them to every association)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[int] = set()

    def handlers(self) -> list[tuple[Any, Any]]:
        """The (event, handler) pairs to bind on the association server."""
        return [
            (evt.EVT_ESTABLISHED, self._established),
            (evt.EVT_RELEASED, self._closed),
            (evt.EVT_ABORTED, self._closed),
            (evt.EVT_CONN_CLOSE, self._closed),
            (evt.EVT_REJECTED, self._rejected_by_pynetdicom),
            (evt.EVT_DIMSE_SENT, self._sent),
        ]

    def rejected(self, kind: str) -> None:
        """Count one association rejected by the gateway's own admission check."""
        DICOM_ASSOCIATIONS_REJECTED.labels(kind).inc()

    def _established(self, event: Any) -> None:
        if not event.assoc.is_acceptor:
            return
        with self._lock:
            self._open.add(id(event.assoc))
        DICOM_ASSOCIATIONS_OPEN.inc()

    def _closed(self, event: Any) -> None:
        with self._lock:
            if id(event.assoc) not in self._open:
                return
            self._open.discard(id(event.assoc))
        DICOM_ASSOCIATIONS_OPEN.dec()

    def _rejected_by_pynetdicom(self, event: Any) -> None:
        # The only rejection pynetdicom makes on its own here: too many associations.
        if event.assoc.is_acceptor:
            DICOM_ASSOCIATIONS_REJECTED.labels("limit").inc()

    def _sent(self, event: Any) -> None:
        message = event.message
        operation = operation_of(message)
        if operation is None:
            return
        code = getattr(message.command_set, "Status", None)
        if code is None:
            return
        kind = status_class(int(code))
        if kind != "pending":
            DIMSE_OPERATIONS.labels(operation, kind).inc()
