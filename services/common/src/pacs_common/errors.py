"""The one error hierarchy of cloudpacs.

Each class carries the gRPC status code it maps to and whether a caller may retry (the way
aiokafka's errors carry ``retriable``). Exactly one place turns these into gRPC statuses: the
interceptor in :mod:`pacs_common.grpc_server`.
"""

from __future__ import annotations

import grpc


class PacsError(Exception):
    """Base of every domain error; unexpected exceptions map to INTERNAL instead."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retriable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(PacsError):
    """The request is malformed; retrying it unchanged will fail again."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(PacsError):
    """The addressed instance, study or object does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(PacsError):
    """The resource exists and the request may not overwrite it."""

    code = grpc.StatusCode.ALREADY_EXISTS


class UnauthenticatedError(PacsError):
    """The caller did not prove who it is: no bearer token, or one that is expired, forged, or
    issued for another audience or by another issuer. A new token may succeed."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(PacsError):
    """The caller may not touch this tenant's data, or lacks the role the call needs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPreconditionError(PacsError):
    """The system is not in a state that allows the request."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(PacsError):
    """A limit was reached (query too broad, too many associations)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(PacsError):
    """A dependency (S3, Kafka, the database, another service) is down; retry later."""

    code = grpc.StatusCode.UNAVAILABLE
    retriable = True


class DataLossError(PacsError):
    """Stored bytes no longer match their checksum: never serve them silently."""

    code = grpc.StatusCode.DATA_LOSS


# What grpcio's asyncio client reports when one of its own operations failed, typically
# writing the next message of a client stream the server had already ended: the server's real
# status is lost (seen with grpcio 1.85 in about 1 % of refused Puts; see
# services/common/tests/test_grpc_error_mapping.py). The call's outcome is unknown, like a
# deadline's, so it is retriable; every call it can happen to here is idempotent.
_STATUS_LOST_DETAILS = "Internal error from Core"


def rpc_code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    """The status code of a failed call (None for an RpcError that carries none)."""
    return exc.code() if callable(getattr(exc, "code", None)) else None


def rpc_details(exc: grpc.RpcError) -> str | None:
    """The status details of a failed call (None for an RpcError that carries none)."""
    return exc.details() if callable(getattr(exc, "details", None)) else None


def status_lost_in_transport(exc: grpc.RpcError) -> bool:
    """Tell whether the client library lost the status of a call (see above)."""
    return rpc_code(exc) == grpc.StatusCode.INTERNAL and rpc_details(exc) == _STATUS_LOST_DETAILS


def is_retriable(exc: BaseException) -> bool:
    """Tell whether an operation that raised ``exc`` may succeed if tried again."""
    if isinstance(exc, PacsError):
        return exc.retriable
    if isinstance(exc, grpc.RpcError):
        code = rpc_code(exc)
        return code in {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        } or status_lost_in_transport(exc)
    return isinstance(exc, (ConnectionError, TimeoutError))


# gRPC codes that say the request itself is wrong: repeating it cannot succeed.
_PERMANENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ALREADY_EXISTS,
}


def is_permanent(exc: BaseException) -> bool:
    """Tell whether ``exc`` says the input is wrong, so that no retry can succeed."""
    if isinstance(exc, PacsError):
        return exc.code in _PERMANENT_CODES
    if isinstance(exc, grpc.RpcError):
        code = rpc_code(exc)
        return code in _PERMANENT_CODES
    return False
