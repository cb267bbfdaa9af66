"""Acknowledgments (HL7 v2.5 chapter 2, 2.9.2 original mode; 2.14.5 ERR segment).

The ACK answers in the sender's version and encoding characters, swaps sending and receiving
application/facility (MSH-3..6), echoes the control ID in MSA-2 and, for ``AE``/``AR``, carries
an ERR segment with the HL7 table 0357 code: in ERR-1 (ELD) for versions before 2.5, in ERR-2
(location), ERR-3 (code) and ERR-4 (severity) from 2.5 on, where ERR-1 was withdrawn.
python-hl7 builds the MSH and MSA (``Message.create_ack``); the ERR segment it does not know.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import hl7

from pacs_hl7.errors import ERROR_TEXT, Hl7Rejection

_ERR_FROM_VERSION = ("2.5", "2.5.1", "2.6", "2.7", "2.8")


def control_id() -> str:
    """A new message control ID (MSH-10 is ST of at most 20 characters)."""
    return uuid.uuid4().hex[:20]


def ack_of(
    message: hl7.Message, code: str, application: str, facility: str, error: Hl7Rejection | None
) -> str:
    """The ACK of a parsed message, as text with segments ended by CR."""
    ack = message.create_ack(code, control_id(), application, facility)
    text = str(ack)
    if error is None:
        return text
    version = str(message.segment("MSH")(12)).strip()
    return text + _err(message, version, error)


def _err(message: hl7.Message, version: str, error: Hl7Rejection) -> str:
    code = f"{error.error_code}^{ERROR_TEXT[error.error_code]}^HL70357"
    where = error.location
    text = str(message.escape(error.text))
    if version in _ERR_FROM_VERSION:
        location = (
            f"{where.segment}^{where.sequence}^{where.field or ''}".rstrip("^")
            if where is not None
            else ""
        )
        return f"ERR||{location}|{code}|E||||{text}\r"
    # ELD: segment^sequence^field^code (the CE in subcomponents)
    sub = code.replace("^", "&")
    if where is not None:
        eld = f"{where.segment}^{where.sequence}^{where.field or ''}^{sub}"
    else:
        eld = f"^^^{sub}"
    return f"ERR|{eld}\r"


def bare_reject(text: str, application: str, facility: str) -> str:
    """An ``AR`` for bytes that are not an HL7 message at all (no MSH to answer from): HL7
    v2.3 defaults, an empty MSA-2, since no control ID could be read."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    safe = text.replace("|", " ").replace("^", " ").replace("&", " ").replace("~", " ")
    safe = safe.replace("\\", " ")
    return (
        f"MSH|^~\\&|{application}|{facility}|||{now}||ACK|{control_id()}|P|2.3\r"
        f"MSA|AR||{safe[:80]}\r"
    )
