"""JSON logging that keeps patient data out of the logs by default.

What counts as patient data (PHI) here: names, patient and accession identifiers, dates of
birth, and every DICOM UID that names a patient's study, series or instance (a UID links a log
line to a patient as surely as a name does: PS3.15 E.1 treats them as identifying). UIDs of the
standard itself (SOP classes, transfer syntaxes: the ``1.2.840.10008.`` root) say nothing
about a patient and stay readable.

Two defences, because one alone misses cases:

1. **Fields.** Code that wants to attach identifiers uses the field names in
   :data:`PHI_FIELDS` (one name per thing: ``sop_instance_uid``, never ``sop``); the filter
   replaces them with ``[redacted]``.
2. **Text.** Messages, exception texts and tracebacks are formatted last, so the formatter
   scrubs every instance-level UID out of the finished line, whatever put it there (an
   exception raised with a UID in its message, a library's error text).

``log_patient_data`` switches both off, for debugging on test data only.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

REDACTED = "[redacted]"

#: Log record fields that carry patient data; the one vocabulary for identifiers in logs.
PHI_FIELDS = frozenset(
    {
        "phi",
        "patient_id",
        "patient_name",
        "patient_birth_date",
        "accession_number",
        "study_instance_uid",
        "series_instance_uid",
        "sop_instance_uid",
        "object_key",  # S3 keys are built from tenant and the three instance UIDs
        "message_key",  # Kafka keys are StudyInstanceUIDs
    }
)

# A DICOM UID (PS3.5 9.1): dot-separated numeric components without leading zeros, starting
# with 0, 1 or 2. Five components or more, so that IPv4 addresses and version numbers are not
# taken for UIDs, or a UUID-derived UID (``2.25.`` and a 128-bit integer, PS3.5 B.2); the
# standard's own root (1.2.840.10008) is kept.
_UID = re.compile(
    r"(?<![\d.])(?!1\.2\.840\.10008\.)"
    r"(?:[012](?:\.(?:0|[1-9]\d*)){4,}|2\.25\.[1-9]\d{6,})"
    r"(?!\d)"  # a refused UID may go on with invalid characters: redact its valid prefix
)


def redact_uids(text: str) -> str:
    """``text`` with every non-standard DICOM UID replaced by ``[redacted]``."""
    return _UID.sub(REDACTED, text)


class PhiFilter(logging.Filter):
    """Replaces the :data:`PHI_FIELDS` of a record unless patient data is explicitly allowed."""

    def __init__(self, allow_patient_data: bool) -> None:
        super().__init__()
        self.allow_patient_data = allow_patient_data

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        if not self.allow_patient_data:
            for name in PHI_FIELDS.intersection(record.__dict__):
                setattr(record, name, REDACTED)
        return True


class PhiRedactingFormatter(JsonFormatter):
    """A JSON formatter whose finished lines carry no instance-level UID."""

    def __init__(self, *args: Any, allow_patient_data: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_patient_data = allow_patient_data

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line, scrubbed last so that tracebacks and library texts are covered."""
        line = super().format(record)
        return line if self.allow_patient_data else redact_uids(line)


def configure_logging(service: str, level: str = "INFO", allow_patient_data: bool = False) -> None:
    """Send JSON log lines to stderr for ``service``; safe to call more than once."""
    handler = logging.StreamHandler(sys.stderr)
    fields: dict[str, Any] = {"service": service}
    handler.setFormatter(
        PhiRedactingFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "time"},
            static_fields=fields,
            allow_patient_data=allow_patient_data,
        )
    )
    handler.addFilter(PhiFilter(allow_patient_data))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python warnings print to stderr past every handler; pydicom's quote the offending value
    # (an invalid UID, a too-long name). Route them through the redacting handler.
    logging.captureWarnings(True)
    # pynetdicom logs every PDU (including identifiers) at DEBUG/INFO; keep it at WARNING.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
