"""Errors of the services the gateway calls, turned into the project's error hierarchy.

The DIMSE and IngestService sides then decide on one question: may the sender retry
(:class:`~pacs_common.errors.UnavailableError`, answered with "out of resources") or not.
"""

from __future__ import annotations

import grpc
from pacs_common.errors import (
    AlreadyExistsError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PacsError,
    PermissionDeniedError,
    UnavailableError,
    rpc_code,
    rpc_details,
    status_lost_in_transport,
)

_BY_CODE: dict[grpc.StatusCode, type[PacsError]] = {
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: UnavailableError,
    grpc.StatusCode.ABORTED: UnavailableError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
}


def from_rpc_error(exc: grpc.RpcError, service: str) -> PacsError:
    """The domain error for a failed call to ``service``."""
    code = rpc_code(exc) or grpc.StatusCode.UNKNOWN
    details = rpc_details(exc) or ""
    if status_lost_in_transport(exc):
        # Outcome unknown: the sender retries, and storing the same object again is harmless.
        return UnavailableError(f"{service}: status lost in transport: {details}")
    error_class = _BY_CODE.get(code, PacsError)
    return error_class(f"{service}: {code.name.lower()}: {details or 'no details'}")


def from_exception(exc: BaseException, service: str) -> PacsError:
    """Any exception of a call to ``service`` as a domain error (connection failures and
    timeouts are retriable)."""
    if isinstance(exc, PacsError):
        return exc
    if isinstance(exc, grpc.RpcError):
        return from_rpc_error(exc, service)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return UnavailableError(f"{service}: {type(exc).__name__}")
    return PacsError(f"{service}: unexpected {type(exc).__name__}")
