"""JSON logging that keeps patient data out of the logs by default.

Code never passes PHI to a logger as a message; callers that want to attach DICOM identifiers
put them in ``extra={"phi": {...}}``. The :class:`PhiFilter` drops that field unless
``log_patient_data`` is switched on, so a slip shows up as a missing field, not a leak.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter


class PhiFilter(logging.Filter):
    """Removes the ``phi`` attribute from records unless explicitly allowed."""

    def __init__(self, allow_patient_data: bool) -> None:
        super().__init__()
        self.allow_patient_data = allow_patient_data

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.allow_patient_data and hasattr(record, "phi"):
            record.phi = "[redacted]"
        return True


def configure_logging(service: str, level: str = "INFO", allow_patient_data: bool = False) -> None:
    """Send JSON log lines to stderr for ``service``; safe to call more than once."""
    handler = logging.StreamHandler(sys.stderr)
    fields: dict[str, Any] = {"service": service}
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "time"},
            static_fields=fields,
        )
    )
    handler.addFilter(PhiFilter(allow_patient_data))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs every PDU (including identifiers) at DEBUG/INFO; keep it at WARNING.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
