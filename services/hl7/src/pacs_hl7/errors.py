"""Why an HL7 message was not accepted: the acknowledgment code and the HL7 error code.

HL7 v2 original-mode acknowledgment (HL7 v2.5 chapter 2, 2.9.2): ``AE`` (application error)
when the message itself is wrong, so that resending it unchanged cannot help; ``AR``
(application reject) when it was refused for reasons unrelated to its content (an unsupported
message type or version, the service unable to make it durable), so that the sender may retry.
The error codes are HL7 table 0357.
"""

from __future__ import annotations

from dataclasses import dataclass

SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
UNSUPPORTED_PROCESSING_ID = 202
UNSUPPORTED_VERSION_ID = 203
UNKNOWN_KEY_IDENTIFIER = 204
APPLICATION_INTERNAL_ERROR = 207

ERROR_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}
"""Table 0357 texts of the codes used here."""


@dataclass(frozen=True)
class Location:
    """Where in the message the error is (ERR-2 / ERR-1 components)."""

    segment: str
    sequence: int = 1
    field: int = 0


class Hl7Rejection(Exception):  # noqa: N818  (an answer to send, not a fault of ours)
    """A message answered with ``AE`` or ``AR`` and an ERR segment; never contains patient data.

    Args:
        ack_code: ``AE`` or ``AR``.
        error_code: an HL7 table 0357 code.
        text: what is wrong, for the sender's operator (no patient data).
        location: the segment and field at fault, when there is one.
    """

    def __init__(
        self, ack_code: str, error_code: int, text: str, location: Location | None = None
    ) -> None:
        super().__init__(text)
        self.ack_code = ack_code
        self.error_code = error_code
        self.text = text
        self.location = location


def content_error(error_code: int, text: str, location: Location | None = None) -> Hl7Rejection:
    """An ``AE``: the message content is wrong."""
    return Hl7Rejection("AE", error_code, text, location)


def rejection(error_code: int, text: str, location: Location | None = None) -> Hl7Rejection:
    """An ``AR``: refused for a reason other than its content (type, version, availability)."""
    return Hl7Rejection("AR", error_code, text, location)
