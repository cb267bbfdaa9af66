"""The clients in ``pacs_common.clients`` over a real host: typed answers, and failures as the
project's errors through the one translation, whichever service answered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pacs.ingest.v1 import ingest_service_pb2 as ingest_pb
from pacs.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.query.v1 import query_service_pb2_grpc as query_grpc
from pacs_common.clients.ingest import IngestClient
from pacs_common.clients.query import QueryClient
from pacs_common.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from pacs_common.grpc_client import open_channel
from pacs_common.pki import ensure_pki
from pacs_common.service_host import ServiceHost
from pacs_common.settings import ServiceSettings
from pacs_common.tls import TlsSettings

QUERY = query_pb.DESCRIPTOR.services_by_name["QueryService"].full_name
INGEST = ingest_pb.DESCRIPTOR.services_by_name["IngestService"].full_name


class FakeIndex(query_grpc.QueryServiceServicer):
    async def FindStudies(self, request: Any, context: Any) -> query_pb.FindStudiesResponse:
        if request.query.tenant == "missing":
            raise NotFoundError("no such tenant")
        if request.query.tenant == "broken":
            raise InvalidArgumentError("bad query")
        return query_pb.FindStudiesResponse(datasets=['{"x": 1}'], total_count=7)

    async def Reindex(self, request: Any, context: Any) -> AsyncIterator[query_pb.ReindexResponse]:
        yield query_pb.ReindexResponse(total=2, processed=1)
        yield query_pb.ReindexResponse(total=2, processed=2)


class FakeGateway(ingest_grpc.IngestServiceServicer):
    async def Echo(self, request: Any, context: Any) -> ingest_pb.EchoResponse:
        return ingest_pb.EchoResponse(ae_title="TESTAE")

    async def Store(self, requests: Any, context: Any) -> ingest_pb.StoreResponse:
        sizes: dict[str, int] = {}
        current = ""
        async for request in requests:
            if request.WhichOneof("part") == "header":
                current = request.header.client_file_id
                sizes[current] = 0
            else:
                sizes[current] += len(request.chunk)
        return ingest_pb.StoreResponse(
            results=[
                ingest_pb.StoreFileResult(
                    client_file_id=name, outcome=ingest_pb.STORE_OUTCOME_STORED, reason=str(size)
                )
                for name, size in sizes.items()
            ]
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    ensure_pki(directory, ["fake", "cli", "hl7"])
    return directory


@pytest.fixture
async def host(pki: Path) -> AsyncIterator[ServiceHost]:
    def register(server: grpc.aio.Server) -> None:
        query_grpc.add_QueryServiceServicer_to_server(FakeIndex(), server)
        ingest_grpc.add_IngestServiceServicer_to_server(FakeGateway(), server)

    settings = ServiceSettings(
        service_name="fake",
        grpc_port=0,
        shutdown_grace_s=0,
        grpc_tls=TlsSettings(dir=pki),
        allowed_peers=["cli"],
    )
    host = ServiceHost(settings, [QUERY, INGEST], register)
    await host.start()
    yield host
    await host.stop()


@pytest.fixture
async def channel(host: ServiceHost, pki: Path) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(f"127.0.0.1:{host.port}", TlsSettings(dir=pki, identity="cli")) as ch:
        yield ch


async def test_query_client_answers_and_translates_failures(channel: grpc.aio.Channel) -> None:
    query = QueryClient(channel, timeout=10)

    page = await query.find_studies(query_pb.Query(tenant="t"))
    assert (list(page.datasets), page.total_count) == (['{"x": 1}'], 7)
    with pytest.raises(NotFoundError, match="no such tenant"):
        await query.find_studies(query_pb.Query(tenant="missing"))
    with pytest.raises(InvalidArgumentError, match="bad query"):
        await query.find_studies(query_pb.Query(tenant="broken"))
    assert [p.processed async for p in query.reindex("t")] == [1, 2]


async def test_ingest_client_streams_files_and_echoes(channel: grpc.aio.Channel) -> None:
    ingest = IngestClient(channel, chunk_size=4, timeout=10)

    assert await ingest.echo() == "TESTAE"
    results = await ingest.store("t", [("a", b"0123456789"), ("b", b"")])
    assert [(r.client_file_id, r.reason) for r in results] == [("a", "10"), ("b", "0")]


async def test_a_refused_identity_and_an_unreachable_service_are_told_apart(
    host: ServiceHost, pki: Path
) -> None:
    target = f"127.0.0.1:{host.port}"
    async with open_channel(target, TlsSettings(dir=pki, identity="hl7")) as channel:
        with pytest.raises(PermissionDeniedError):
            await IngestClient(channel, timeout=10).echo()
    async with open_channel("127.0.0.1:1", TlsSettings(dir=pki, identity="cli")) as channel:
        with pytest.raises(UnavailableError):
            await QueryClient(channel, timeout=5).find_studies(query_pb.Query(tenant="t"))
