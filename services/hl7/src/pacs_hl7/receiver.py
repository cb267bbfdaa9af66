"""One inbound HL7 message to its ACK: decode, parse, check, publish, acknowledge.

The ACK is ``AA`` only after every event of the message was acknowledged by Kafka with
``acks=all`` (:meth:`pacs_common.events.EventPublisher.publish_many`): from then on the
message's effect is durable and the indexer applies it, in order per patient. If Kafka does
not acknowledge, the answer is ``AR`` (207, application internal error) and the sender resends
later; a message resent after a lost ACK publishes its events again, which is harmless because
the indexer applies each (sender, control ID) once.
"""

from __future__ import annotations

import logging
import time

import hl7
from pacs_common.errors import UnavailableError
from pacs_common.events import TOPIC_WORKFLOW, EventPublisher, now_rfc3339
from prometheus_client import Counter, Histogram

from pacs_hl7.ack import ack_of, bare_reject
from pacs_hl7.errors import (
    APPLICATION_INTERNAL_ERROR,
    UNKNOWN_KEY_IDENTIFIER,
    Hl7Rejection,
    Location,
    rejection,
)
from pacs_hl7.fields import segments
from pacs_hl7.messages import message_type, translate
from pacs_hl7.settings import Hl7Settings

log = logging.getLogger(__name__)

MESSAGES = Counter(
    "pacs_hl7_messages",
    "HL7 messages received, by message type and acknowledgment code",
    ["message_type", "ack"],
)
ACK_SECONDS = Histogram(
    "pacs_hl7_ack_seconds",
    "Time from a message's last byte to its ACK (publishing to Kafka included)",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

_CHARSETS = {
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "8859/1": "latin-1",
    "ASCII": "ascii",
}
"""MSH-18 character sets (HL7 table 0211) we decode; others are tried as UTF-8, then Latin-1."""


def decode(block: bytes) -> tuple[str, str]:
    """The message text (segments ended by CR) and the encoding to answer in."""
    head = block[:512].split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    fields = head.split(head[3]) if len(head) > 3 else []
    declared = _CHARSETS.get(fields[17].strip().upper(), "") if len(fields) > 17 else ""
    for encoding in ([declared] if declared else []) + ["utf-8", "latin-1"]:
        try:
            text = block.decode(encoding)
        except UnicodeDecodeError:
            continue
        text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r") + "\r"
        return text, encoding
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


class Receiver:
    """Turns HL7 messages into published events and ACKs."""

    def __init__(self, settings: Hl7Settings, publisher: EventPublisher) -> None:
        self._settings = settings
        self._publisher = publisher

    def _tenant(self, facility: str) -> str:
        tenant = self._settings.tenant_by_facility.get(facility) or self._settings.default_tenant
        if not tenant:
            raise rejection(
                UNKNOWN_KEY_IDENTIFIER,
                "sending facility is not registered",
                Location("MSH", 1, 4),
            )
        return tenant

    async def handle(self, block: bytes) -> tuple[str, str]:
        """The ACK for one MLLP block, and its encoding; never raises."""
        started = time.perf_counter()
        settings = self._settings
        text, encoding = decode(block)
        try:
            if not text.startswith("MSH") or len(text) < 8:
                raise ValueError("no MSH segment")
            message = hl7.parse(text)
            msh = segments(message)[0]
        except Exception:
            MESSAGES.labels("unparseable", "AR").inc()
            return bare_reject(
                "not an HL7 v2 message", settings.application, settings.facility
            ), encoding
        code, trigger = message_type(msh)
        error: Hl7Rejection | None = None
        try:
            translated = translate(message, self._tenant(msh.get(4)), now_rfc3339())
            await self._publisher.publish_many(TOPIC_WORKFLOW, translated.events)
        except Hl7Rejection as exc:
            error = exc
        except UnavailableError as exc:
            log.warning("events not acknowledged by Kafka", extra={"error": str(exc)})
            error = rejection(
                APPLICATION_INTERNAL_ERROR, "events could not be made durable; resend"
            )
        except Exception:
            log.exception("unexpected error handling an HL7 message")
            error = rejection(APPLICATION_INTERNAL_ERROR, "internal error")
        ack_code = "AA" if error is None else error.ack_code
        MESSAGES.labels(f"{code}^{trigger}"[:16], ack_code).inc()
        ack = ack_of(message, ack_code, settings.application, settings.facility, error)
        ACK_SECONDS.observe(time.perf_counter() - started)
        return ack, encoding
