"""The one translation of the project's errors into HTTP answers (PS3.18 8.5, 8.6).

Every failure a handler raises is a :class:`~pacs_common.errors.PacsError` (clients of the
indexer and storage translate gRPC statuses into them); this module turns it into a status
code with a short plain-text reason, so no exception reaches the client as a 500 with a trace.
"""

from __future__ import annotations

import logging

from pacs_common.errors import (
    AlreadyExistsError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PacsError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

log = logging.getLogger(__name__)


class NotAcceptableError(PacsError):
    """No media type / transfer syntax the client accepts can be produced (HTTP 406)."""


class UnsupportedMediaTypeError(PacsError):
    """A request body of a media type the resource does not take (HTTP 415)."""


class RangeNotSatisfiableError(PacsError):
    """A Range header outside the resource (HTTP 416)."""


_STATUS: list[tuple[type[PacsError], int]] = [
    (InvalidArgumentError, 400),
    (UnauthenticatedError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (NotAcceptableError, 406),
    (AlreadyExistsError, 409),
    (FailedPreconditionError, 409),
    (ResourceExhaustedError, 413),
    (UnsupportedMediaTypeError, 415),
    (RangeNotSatisfiableError, 416),
    (UnavailableError, 503),
    (DataLossError, 500),
]


def status_of(error: PacsError) -> int:
    """The HTTP status of a domain error (500 for an unexpected kind)."""
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


async def pacs_error_response(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: a domain error as its status and reason."""
    assert isinstance(exc, PacsError)  # registered for PacsError only
    status = status_of(exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="cloudpacs"'
    if status == 503:
        headers["Retry-After"] = "5"
    if status >= 500:
        log.warning("request failed", extra={"status": status, "error": exc.message})
    return PlainTextResponse(exc.message + "\n", status_code=status, headers=headers)
