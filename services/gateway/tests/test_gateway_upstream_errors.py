"""Which failures of the storage and indexer calls the gateway answers with "out of resources"
(retry later, PS3.4 B.2.3) and which with a failure the sender must not retry."""

from __future__ import annotations

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata
from pacs_common.clients.errors import from_exception
from pacs_common.errors import InvalidArgumentError, PacsError, UnavailableError


def rpc_error(code: grpc.StatusCode, details: str) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details)


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (rpc_error(grpc.StatusCode.UNAVAILABLE, "Kafka is unreachable"), UnavailableError),
        (rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), UnavailableError),
        # grpcio's client lost the server's status (it ended the call while the object was
        # still being sent): the outcome is unknown, and sending the object again is harmless.
        (rpc_error(grpc.StatusCode.INTERNAL, "Internal error from Core"), UnavailableError),
        (rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad UID"), InvalidArgumentError),
        (ConnectionResetError(), UnavailableError),
        (TimeoutError(), UnavailableError),
    ],
)
def test_retriable_failures_become_unavailable(
    failure: BaseException, expected: type[PacsError]
) -> None:
    assert type(from_exception(failure, "storage")) is expected


def test_an_internal_error_of_the_service_is_not_retried() -> None:
    error = from_exception(
        rpc_error(grpc.StatusCode.INTERNAL, "internal error; see the service log"), "storage"
    )
    assert type(error) is PacsError
    assert not error.retriable
