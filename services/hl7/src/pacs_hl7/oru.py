"""ORU^R01 outbound: a structured report, once indexed, sent to the RIS over MLLP.

The indexer publishes ``ReportIndexed`` for every SR it indexes; this consumer turns each into
an HL7 v2.5.1 ORU^R01 (MSH, PID, OBR, OBX: one TX OBX per line of the plain-text rendering,
then one NM OBX per measurement with its units; HL7 v2.5.1 chapter 7, 7.3.1) and sends it over
MLLP. It is retried until the destination acknowledges it: the Kafka offset is committed only
after an ``AA``/``CA``; ``AR``, a refused connection or a timeout are retried with backoff
(:class:`~pacs_common.events.EventConsumer`), and an ``AE`` (the destination says the message
is wrong, so resending cannot help) goes to the dead-letter topic, never dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import hl7
from aiokafka import ConsumerRecord
from hl7.mllp import open_hl7_connection
from pacs.events.v1 import workflow_events_pb2 as pb
from pacs_common.errors import InvalidArgumentError, UnavailableError
from pacs_common.events import event_type, header
from prometheus_client import Counter

from pacs_hl7.ack import control_id
from pacs_hl7.settings import Hl7Settings

log = logging.getLogger(__name__)

SENT = Counter("pacs_hl7_oru", "ORU^R01 messages sent, by the destination's answer", ["ack"])
_REPORT = event_type(pb.ReportIndexed())


def _escape(text: str) -> str:
    """HL7 escape sequences for the delimiters (HL7 v2.5 2.7.4)."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    return out.replace("&", "\\T\\").replace("~", "\\R\\").replace("\r", " ").replace("\n", " ")


def _pn_to_xpn(name: str) -> str:
    parts = (name.split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (_escape(p) for p in parts)
    return "^".join((family, given, middle, suffix, prefix)).rstrip("^")


def _segment(name: str, fields: dict[int, str]) -> str:
    """A segment with ``fields`` (HL7 1-based positions) set, the others empty."""
    values = [""] * max(fields)
    for position, value in fields.items():
        values[position - 1] = value
    return name + "|" + "|".join(values)


def build_oru(report: pb.ReportIndexed, settings: Hl7Settings) -> str:
    """The ORU^R01 (v2.5.1) of one indexed report, segments ended by CR."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    patient = report.patient
    segments = [
        f"MSH|^~\\&|{settings.application}|{settings.facility}|{settings.oru_application}|"
        f"{settings.oru_facility}|{now}||ORU^R01^ORU_R01|{control_id()}|P|2.5.1|||AL|NE||"
        "UNICODE UTF-8",
        f"PID|1||{_escape(patient.patient_id)}^^^{_escape(patient.issuer_of_patient_id)}||"
        f"{_pn_to_xpn(patient.patient_name)}||{patient.patient_birth_date}|{patient.patient_sex}",
        _segment(
            "OBR",
            {
                1: "1",
                3: _escape(report.accession_number),  # filler order number
                4: "18748-4^Diagnostic imaging study^LN",
                18: _escape(report.accession_number),  # placer field 1: the accession (IHE)
                25: "F",  # result status: final
            },
        ),
    ]
    sequence = 0
    for line in report.text.splitlines() or [""]:
        sequence += 1
        segments.append(
            f"OBX|{sequence}|TX|18782-3^Radiology Study observation^LN||{_escape(line)}||||||F"
        )
    for measurement in report.measurements:
        sequence += 1
        concept = (
            f"{_escape(measurement.concept_code_value)}^{_escape(measurement.concept_code_meaning)}"
            f"^{_escape(measurement.concept_code_scheme)}"
        )
        units = (
            f"{_escape(measurement.units_code_value)}^"
            f"{_escape(measurement.units_code_meaning)}^UCUM"
        )
        sub_id = _escape(measurement.tracking_identifier or measurement.finding_site)
        segments.append(
            f"OBX|{sequence}|NM|{concept}|{sub_id}|{_escape(measurement.value)}|{units}|||||F"
        )
    return "\r".join(segments) + "\r"


class ReportSender:
    """The consumer handler sending each ReportIndexed as ORU^R01."""

    def __init__(self, settings: Hl7Settings) -> None:
        self._settings = settings

    async def __call__(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Send one report; other workflow events are skipped.

        Raises:
            UnavailableError: not acknowledged yet (retried).
            InvalidArgumentError: the destination answered ``AE`` (dead-lettered).
        """
        if header(record, "ce_type") != _REPORT:
            return
        report = pb.ReportIndexed.FromString(record.value or b"")
        await self.send(build_oru(report, self._settings))

    async def send(self, message: str) -> None:
        """Send one message and wait for its ACK."""
        settings = self._settings
        assert settings.oru_host is not None
        try:
            async with asyncio.timeout(settings.oru_timeout_s):
                reader, writer = await open_hl7_connection(
                    settings.oru_host, settings.oru_port, encoding="utf-8"
                )
                try:
                    writer.writemessage(message)
                    await writer.drain()
                    ack = await reader.readmessage()
                finally:
                    writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            SENT.labels("unreachable").inc()
            raise UnavailableError(f"ORU destination not reached: {exc!r}") from exc
        code = _ack_code(ack)
        SENT.labels(code or "none").inc()
        if code in ("AA", "CA"):
            return
        if code in ("AE", "CE"):
            raise InvalidArgumentError(f"the ORU destination answered {code}")
        raise UnavailableError(f"the ORU destination answered {code or 'no MSA'}; retrying")


def _ack_code(ack: hl7.Message) -> str:
    try:
        return str(ack.segment("MSA")(1)).strip().upper()
    except KeyError:
        return ""
