"""Send one instance to a DICOMweb destination with STOW-RS (PS3.18 10.5).

``POST {url}/studies`` with one ``application/dicom`` part in a ``multipart/related`` body
(PS3.18 8.6.1.2, 10.5.1.1); the response says per instance what happened (PS3.18 10.5.3):
200 all stored, 202 some stored (the Failed SOP Sequence (0008,1198) lists the others), 409
none stored. The HTTP client is urllib3 (already the transport of the storage grants); the
request runs in a worker thread.

Outcomes, as for C-STORE (:mod:`pacs_router.dimse_send`): stored (200, or 202 without our
instance among the failures) is accepted; no connection, 5xx, 401/403 (credentials to fix, the
queue waits rather than dead-lettering everything) and 429 are retried; 409, 400, 413, 415 and
a failure listed for the instance are refused for good with the Failure Reason (0008,1197).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import urllib3

from pacs_router.dimse_send import (
    DestinationFailedError,
    DestinationRefusedError,
    DestinationUnavailableError,
    SendResult,
)
from pacs_router.rules import StowDestination

_FAILED_SOP_SEQUENCE = "00081198"
_FAILURE_REASON = "00081197"
_REFERENCED_SOP_INSTANCE = "00081155"
_RETRY_STATUSES = {401, 403, 408, 429}
_REFUSED_STATUSES = {400, 404, 409, 413, 415}


def multipart_body(part10: bytes) -> tuple[bytes, str]:
    """One ``application/dicom`` part (PS3.18 8.6.1.2); a fresh boundary per request, so that
    no part's binary content can contain it by accident."""
    boundary = f"pacs-route-{uuid.uuid4().hex}"
    body = b"".join(
        (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            part10,
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return body, content_type


def stow(
    destination: StowDestination,
    http: urllib3.PoolManager,
    part10: bytes,
    sop_instance_uid: str,
) -> SendResult:
    """Store one Part 10 object at the destination; blocking (call it in a worker thread).

    Raises:
        DestinationUnavailableError, DestinationRefusedError, DestinationFailedError:
            see the module docstring.
    """
    body, content_type = multipart_body(part10)
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    if destination.bearer_token_file is not None:
        try:
            token = destination.bearer_token_file.read_text().strip()
        except OSError as exc:
            raise DestinationUnavailableError(f"bearer token file unreadable: {exc}") from exc
        headers["Authorization"] = f"Bearer {token}"
    url = destination.url.rstrip("/") + "/studies"
    try:
        response = http.request("POST", url, body=body, headers=headers)
    except urllib3.exceptions.HTTPError as exc:
        raise DestinationUnavailableError(f"cannot reach {url}: {exc}") from exc
    status = response.status
    reason = _failure_reason(response.data, sop_instance_uid)
    if status == 200 or (status == 202 and reason is None):
        return SendResult(0x0000 if status == 200 else 0xB000)
    what = f"STOW-RS HTTP {status}{f', failure reason {reason}' if reason else ''}"
    if status == 202 or status in _REFUSED_STATUSES:
        raise DestinationRefusedError(what)
    if status >= 500 or status in _RETRY_STATUSES:
        raise DestinationUnavailableError(what)
    raise DestinationFailedError(what)


def _failure_reason(data: bytes, sop_instance_uid: str) -> str | None:
    """The Failure Reason of our instance in a STOW-RS response's Failed SOP Sequence (as
    hex, PS3.18 Table I.2-1 / PS3.4 Annex B status codes); None when it is not listed or the
    response is not DICOM JSON."""
    try:
        answer: Any = json.loads(data)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    failed = answer.get(_FAILED_SOP_SEQUENCE, {}).get("Value", [])
    for item in failed if isinstance(failed, list) else []:
        uids = item.get(_REFERENCED_SOP_INSTANCE, {}).get("Value", [])
        if sop_instance_uid in uids or not uids:
            reasons = item.get(_FAILURE_REASON, {}).get("Value", [0])
            return f"0x{int(reasons[0]):04X}" if reasons else "unknown"
    return None
