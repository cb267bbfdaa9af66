"""The one translation of a failed gRPC call into :mod:`pacs_common.errors`.

Callers then decide on one question: may they retry (:class:`~pacs_common.errors.UnavailableError`,
for example a DICOM "out of resources" answer) or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
    grpc.StatusCode.UNAUTHENTICATED: PermissionDeniedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
}


def from_rpc_error(exc: grpc.RpcError, service: str) -> PacsError:
    """The domain error for a failed call to ``service``."""
    code = rpc_code(exc) or grpc.StatusCode.UNKNOWN
    details = rpc_details(exc) or ""
    if status_lost_in_transport(exc):
        # Outcome unknown: the caller retries, and every call this happens to is idempotent.
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


@contextmanager
def translated(service: str) -> Iterator[None]:
    """Inside the block, a failed gRPC call raises the project's error for ``service``
    (:func:`from_rpc_error`) instead of ``grpc.RpcError``: the one translation every client
    uses."""
    try:
        yield
    except grpc.RpcError as exc:
        raise from_rpc_error(exc, service) from exc
