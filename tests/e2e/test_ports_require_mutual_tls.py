"""Service identity across the running stack: every gRPC port speaks mutual TLS only, and each
service answers only the identities that need it (storage from gateway, indexer and the CLI;
the indexer from gateway and CLI; IngestService from the CLI and the DICOMweb facade)."""

from __future__ import annotations

import grpc
import pytest
from pacs.ingest.v1 import ingest_service_pb2, ingest_service_pb2_grpc
from pacs.query.v1 import query_service_pb2, query_service_pb2_grpc
from pacs_common.auth import Role
from pacs_common.local import client_tls, infra_environment, sync_channel
from pacs_testkit.hydra import Hydra

from tests.e2e.e2e_support import RunningStack

pytestmark = pytest.mark.e2e


def _ports(stack: RunningStack) -> dict[str, int]:
    return {
        "storage": stack.storage_port,
        "indexer": stack.indexer_port,
        "gateway": stack.gateway_port,
    }


@pytest.mark.parametrize("service", ["storage", "indexer", "gateway"])
def test_a_plaintext_client_is_refused_by_every_service(
    e2e_stack: RunningStack, service: str
) -> None:
    port = _ports(e2e_stack)[service]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = ingest_service_pb2_grpc.IngestServiceStub(channel).Echo
        with pytest.raises(grpc.RpcError) as raised:
            echo(ingest_service_pb2.EchoRequest(), timeout=5)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def _echo(stack: RunningStack, identity: str) -> ingest_service_pb2.EchoResponse:
    """IngestService.Echo as ``identity``, with a valid token of the stack's tenant: only the
    certificate decides the outcome."""
    token = Hydra(infra_environment()).metadata(stack.tenant, [Role.INGEST])
    with sync_channel(f"127.0.0.1:{stack.gateway_port}", client_tls(identity)) as channel:
        reply: ingest_service_pb2.EchoResponse = ingest_service_pb2_grpc.IngestServiceStub(
            channel
        ).Echo(ingest_service_pb2.EchoRequest(), timeout=10, metadata=token)
        return reply


def _find(stack: RunningStack, identity: str) -> query_service_pb2.FindStudiesResponse:
    with sync_channel(f"127.0.0.1:{stack.indexer_port}", client_tls(identity)) as channel:
        reply: query_service_pb2.FindStudiesResponse = query_service_pb2_grpc.QueryServiceStub(
            channel
        ).FindStudies(
            query_service_pb2.FindStudiesRequest(
                query=query_service_pb2.Query(tenant=stack.tenant, limit=1)
            ),
            timeout=10,
        )
        return reply


def test_the_gateway_serves_the_cli_and_refuses_the_indexer(e2e_stack: RunningStack) -> None:
    assert _echo(e2e_stack, "cli").ae_title == e2e_stack.ae_title
    with pytest.raises(grpc.RpcError) as raised:
        _echo(e2e_stack, "indexer")
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_indexer_serves_the_gateway_and_refuses_storage(e2e_stack: RunningStack) -> None:
    _find(e2e_stack, "gateway")
    with pytest.raises(grpc.RpcError) as raised:
        _find(e2e_stack, "storage")
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
