"""QueryService through an in-process gRPC server and a real client channel.

Calls carry a bearer token of the test's tenant from the local hydra (role ``query``), as a
cloud application's would; the authorization tests use other tokens or none.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from indexer_helpers import Catalog, make_instance, values
from pacs.query.v1 import query_service_pb2 as pb
from pacs.query.v1 import query_service_pb2_grpc as pb_grpc
from pacs_common.audit_events import AuditSettings
from pacs_common.auth import Role
from pacs_common.oauth_client import bearer_interceptors
from pacs_common.settings import KafkaSettings
from pacs_indexer.app import IndexerApp, create_app
from pacs_indexer.database import Database
from pacs_indexer.settings import IndexerSettings
from pacs_testkit.channels import plain_aio_channel
from pacs_testkit.hydra import Hydra
from pydicom.uid import generate_uid


@pytest.fixture
async def app(database: Database) -> AsyncIterator[IndexerApp]:
    settings = IndexerSettings(
        grpc_port=0,
        metrics_port=0,
        database_url=database.url,
        consume_events=False,
        max_results=5,
        # Queries only: no Kafka client is made, and a unit run has no broker credentials.
        kafka=KafkaSettings(security_protocol="PLAINTEXT"),
        # Nor an audit trail: an emitter that cannot reach Kafka holds the stop to its deadline.
        audit=AuditSettings(enabled=False),
    )
    indexer = create_app(settings)
    await indexer.start()
    yield indexer
    await indexer.stop()
    await indexer.stop()


@pytest.fixture
async def stub(
    app: IndexerApp, hydra: Hydra, tenant: str
) -> AsyncIterator[pb_grpc.QueryServiceStub]:
    """A QueryService client of ``tenant`` with the role ``query``."""
    interceptors = bearer_interceptors(hydra.client(tenant, [Role.QUERY]))
    async with plain_aio_channel(
        f"127.0.0.1:{app.grpc_port}", interceptors=interceptors
    ) as channel:
        yield pb_grpc.QueryServiceStub(channel)


@pytest.fixture
async def anonymous(app: IndexerApp) -> AsyncIterator[pb_grpc.QueryServiceStub]:
    """A QueryService client without a token."""
    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        yield pb_grpc.QueryServiceStub(channel)


async def test_find_studies_series_instances_and_metadata(
    stub: pb_grpc.QueryServiceStub, catalog: Catalog, tenant: str
) -> None:
    ds = make_instance(
        PatientName="GRPC^TEST",
        PatientID="G1",
        StudyDate="20240301",
        AccessionNumber="A-1",
        SeriesNumber=2,
        InstanceNumber=4,
        InstitutionName="HOSPITAL",
    )
    catalog.add(tenant, ds)
    studies = await stub.FindStudies(
        pb.FindStudiesRequest(
            query=pb.Query(
                tenant=tenant,
                match={"PatientName": "grpc*", "StudyDate": "20240301-20240302"},
                return_keys=["AccessionNumber"],
                fuzzy_matching=True,
            )
        )
    )
    assert studies.total_count == 1
    study = json.loads(studies.datasets[0])
    assert values(study, "0020000D") == [ds.StudyInstanceUID]
    assert values(study, "00080050") == ["A-1"]
    assert values(study, "00100010") == [{"Alphabetic": "GRPC^TEST"}]

    series = await stub.FindSeries(
        pb.FindSeriesRequest(
            query=pb.Query(tenant=tenant, match={"StudyInstanceUID": ds.StudyInstanceUID})
        )
    )
    assert [values(json.loads(d), "0020000E") for d in series.datasets] == [[ds.SeriesInstanceUID]]
    instances = await stub.FindInstances(
        pb.FindInstancesRequest(
            query=pb.Query(
                tenant=tenant,
                match={"SeriesInstanceUID": ds.SeriesInstanceUID},
                return_keys=["InstanceNumber"],
            )
        )
    )
    assert values(json.loads(instances.datasets[0]), "00200013") == [4]

    metadata = await stub.GetInstanceMetadata(
        pb.GetInstanceMetadataRequest(
            tenant=tenant,
            study_instance_uid=ds.StudyInstanceUID,
            series_instance_uid=ds.SeriesInstanceUID,
            sop_instance_uid=ds.SOPInstanceUID,
        )
    )
    header = json.loads(metadata.dataset)
    assert header["00080080"] == {"vr": "LO", "Value": ["HOSPITAL"]}


async def test_errors_map_to_status_codes(
    stub: pb_grpc.QueryServiceStub, catalog: Catalog, tenant: str
) -> None:
    for _ in range(6):
        catalog.add(tenant, make_instance(PatientID="MANY"))

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.FindStudies(
            pb.FindStudiesRequest(query=pb.Query(tenant=tenant, match={"NotAKeyword": "x"}))
        )
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NotAKeyword" in (unknown.value.details() or "")

    # No tenant in the request: the token's (6 studies, over the maximum of 5).
    with pytest.raises(grpc.aio.AioRpcError) as broad:
        await stub.FindStudies(pb.FindStudiesRequest(query=pb.Query()))
    assert broad.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "6 study results, more than the maximum of 5" in (broad.value.details() or "")

    page = await stub.FindStudies(pb.FindStudiesRequest(query=pb.Query(tenant=tenant, limit=4)))
    assert (len(page.datasets), page.total_count) == (4, 6)

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetInstanceMetadata(pb.GetInstanceMetadataRequest(sop_instance_uid="1.2.3"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_study_metadata_streams_every_header(
    stub: pb_grpc.QueryServiceStub, catalog: Catalog, tenant: str
) -> None:
    study = generate_uid()
    first, second = generate_uid(), generate_uid()
    catalog.add_many(
        tenant,
        [make_instance(study, first, SeriesNumber=1, InstanceNumber=n) for n in range(250)],
    )
    catalog.add(tenant, make_instance(study, second, SeriesNumber=2, InstanceNumber=1))
    catalog.add(tenant, make_instance())  # another study: not part of the answer

    responses = [
        response
        async for response in stub.GetStudyMetadata(
            pb.GetStudyMetadataRequest(tenant=tenant, study_instance_uid=study)
        )
    ]
    headers = [json.loads(text) for response in responses for text in response.datasets]
    assert len(responses) > 1  # paged under the message size limit
    assert len(headers) == 251
    assert [values(h, "00200013")[0] for h in headers[:3]] == [0, 1, 2]
    assert values(headers[-1], "0020000E") == [second]

    one_series = [
        text
        async for response in stub.GetStudyMetadata(
            pb.GetStudyMetadataRequest(
                tenant=tenant, study_instance_uid=study, series_instance_uid=second
            )
        )
        for text in response.datasets
    ]
    assert len(one_series) == 1

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        async for _ in stub.GetStudyMetadata(
            pb.GetStudyMetadataRequest(study_instance_uid=generate_uid())
        ):
            pass
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_query_latency_is_exported_to_prometheus(
    app: IndexerApp, stub: pb_grpc.QueryServiceStub, tenant: str
) -> None:
    await stub.FindSeries(pb.FindSeriesRequest(query=pb.Query(tenant=tenant)))
    assert app.metrics is not None
    url = f"http://127.0.0.1:{app.metrics.port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'pacs_index_query_duration_seconds_count{level="SERIES"}' in text
    assert "pacs_grpc_server_requests_total" in text


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    code: grpc.StatusCode = info.value.code()
    return code


async def test_a_call_without_token_is_unauthenticated(
    anonymous: pb_grpc.QueryServiceStub, catalog: Catalog, tenant: str
) -> None:
    catalog.add(tenant, make_instance())
    find = anonymous.FindStudies(pb.FindStudiesRequest(query=pb.Query(tenant=tenant)))
    assert await _code(find) == grpc.StatusCode.UNAUTHENTICATED
    check = anonymous.CheckIndex(pb.CheckIndexRequest(tenant=tenant))
    assert await _code(check) == grpc.StatusCode.UNAUTHENTICATED


async def test_another_tenants_data_is_permission_denied(
    stub: pb_grpc.QueryServiceStub, catalog: Catalog, tenant: str
) -> None:
    other = f"{tenant}-other"
    ds = make_instance()
    catalog.add(other, ds)
    find = stub.FindStudies(pb.FindStudiesRequest(query=pb.Query(tenant=other)))
    assert await _code(find) == grpc.StatusCode.PERMISSION_DENIED
    metadata = stub.GetInstanceMetadata(
        pb.GetInstanceMetadataRequest(
            tenant=other,
            study_instance_uid=ds.StudyInstanceUID,
            series_instance_uid=ds.SeriesInstanceUID,
            sop_instance_uid=ds.SOPInstanceUID,
        )
    )
    assert await _code(metadata) == grpc.StatusCode.PERMISSION_DENIED

    async def stream() -> None:
        request = pb.GetStudyMetadataRequest(tenant=other, study_instance_uid=ds.StudyInstanceUID)
        async for _ in stub.GetStudyMetadata(request):
            pass

    assert await _code(stream()) == grpc.StatusCode.PERMISSION_DENIED
    # The token's own tenant does not hold that study: nothing leaks through it either.
    own = await stub.FindStudies(
        pb.FindStudiesRequest(query=pb.Query(match={"StudyInstanceUID": ds.StudyInstanceUID}))
    )
    assert own.total_count == 0


async def test_roles_decide_which_methods_a_token_may_call(
    app: IndexerApp, hydra: Hydra, catalog: Catalog, tenant: str
) -> None:
    catalog.add(tenant, make_instance())
    target = f"127.0.0.1:{app.grpc_port}"
    ingest_only = bearer_interceptors(hydra.client(tenant, [Role.INGEST]))
    async with plain_aio_channel(target, interceptors=ingest_only) as channel:
        stub = pb_grpc.QueryServiceStub(channel)
        find = stub.FindStudies(pb.FindStudiesRequest(query=pb.Query()))
        assert await _code(find) == grpc.StatusCode.PERMISSION_DENIED
    query_only = bearer_interceptors(hydra.client(tenant, [Role.QUERY]))
    async with plain_aio_channel(target, interceptors=query_only) as channel:
        stub = pb_grpc.QueryServiceStub(channel)
        assert (await stub.FindStudies(pb.FindStudiesRequest(query=pb.Query()))).total_count == 1
        check = stub.CheckIndex(pb.CheckIndexRequest())
        assert await _code(check) == grpc.StatusCode.PERMISSION_DENIED
    admin = bearer_interceptors(hydra.client(tenant, [Role.ADMIN]))
    async with plain_aio_channel(target, interceptors=admin) as channel:
        stub = pb_grpc.QueryServiceStub(channel)
        # Past authorization: this indexer does not reach storage (consume_events=False).
        check = stub.CheckIndex(pb.CheckIndexRequest())
        assert await _code(check) == grpc.StatusCode.FAILED_PRECONDITION
