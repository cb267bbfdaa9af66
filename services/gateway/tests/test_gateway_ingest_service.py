"""IngestService over a real gRPC channel, with the real storage service."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import grpc
import pytest
from gateway_helpers import sample_path
from pacs.ingest.v1 import ingest_service_pb2 as pb
from pacs.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from pacs_common.auth import Role
from pacs_common.clients.storage import StorageClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.oauth_client import ClientCredentials, bearer_interceptors
from pacs_testkit.hydra import Hydra

Outcome = pb.StoreOutcome
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _files(
    *files: tuple[str, bytes], tenant: str = "", chunk: int = 4096
) -> AsyncIterator[pb.StoreRequest]:
    for name, data in files:
        yield pb.StoreRequest(header=pb.StoreFileHeader(tenant=tenant, client_file_id=name))
        for start in range(0, len(data), chunk):
            yield pb.StoreRequest(chunk=data[start : start + chunk])


_channels: list[grpc.aio.Channel] = []


def _stub(port: int, credentials: ClientCredentials | None) -> pb_grpc.IngestServiceStub:
    """A client of the gateway's IngestService sending ``credentials``' token (None: no token)."""
    interceptors = bearer_interceptors(credentials) if credentials is not None else []
    # The stub does not keep its channel alive (a collected channel closes): keep it here.
    channel = open_channel(f"127.0.0.1:{port}", client_tls(), interceptors=interceptors)
    _channels.append(channel)
    return pb_grpc.IngestServiceStub(channel)


@pytest.fixture
def ingest_client(hydra: Hydra, tenant: str) -> ClientCredentials:
    """Credentials of an application of ``tenant`` with the role ``ingest``."""
    return hydra.client(tenant, [Role.INGEST])


@pytest.mark.integration
async def test_store_reports_each_file(
    start_gateway, storage_app, tenant: str, ingest_client: ClientCredentials
) -> None:
    gateway = await start_gateway(storage_target=f"127.0.0.1:{storage_app.grpc_port}")
    ct = sample_path("CT_small.dcm").read_bytes()
    j2k = sample_path("JPEG2000.dcm").read_bytes()

    response = await _stub(gateway.grpc_port, ingest_client).Store(
        _files(
            ("ct", ct),
            ("not-dicom", b"hello, this is not a DICOM file" * 10),
            ("j2k", j2k),
            ("ct-again", ct),
            tenant=tenant,
        )
    )

    results = {r.client_file_id: r for r in response.results}
    assert [r.client_file_id for r in response.results] == ["ct", "not-dicom", "j2k", "ct-again"]
    assert results["ct"].outcome == Outcome.STORE_OUTCOME_STORED
    assert results["ct"].object.sha256 == hashlib.sha256(ct).hexdigest()
    assert results["ct"].object.instance.tenant == tenant
    assert results["not-dicom"].outcome == Outcome.STORE_OUTCOME_REFUSED
    assert "DICOM" in results["not-dicom"].reason
    assert results["j2k"].outcome == Outcome.STORE_OUTCOME_STORED
    assert results["j2k"].object.instance.transfer_syntax_uid == "1.2.840.10008.1.2.4.91"
    assert results["ct-again"].outcome == Outcome.STORE_OUTCOME_ALREADY_PRESENT


@pytest.mark.integration
async def test_echo_answers_with_the_ae_title(start_gateway, storage_app, ingest_client) -> None:
    gateway = await start_gateway(storage_target=f"127.0.0.1:{storage_app.grpc_port}")
    response = await _stub(gateway.grpc_port, ingest_client).Echo(pb.EchoRequest())
    assert response.ae_title == "CLOUDPACS"


async def test_echo_is_unavailable_without_storage(start_gateway, ingest_client) -> None:
    gateway = await start_gateway()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(gateway.grpc_port, ingest_client).Echo(pb.EchoRequest())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_store_without_storage_is_unavailable_per_file(start_gateway, ingest_client) -> None:
    gateway = await start_gateway()
    ct = sample_path("CT_small.dcm").read_bytes()
    response = await _stub(gateway.grpc_port, ingest_client).Store(
        _files(("ct", ct), ("junk", b"x" * 300))
    )
    outcomes = [r.outcome for r in response.results]
    assert outcomes == [Outcome.STORE_OUTCOME_UNAVAILABLE, Outcome.STORE_OUTCOME_REFUSED]


async def test_chunk_before_header_is_invalid_argument(start_gateway, ingest_client) -> None:
    gateway = await start_gateway()

    async def bad() -> AsyncIterator[pb.StoreRequest]:
        yield pb.StoreRequest(chunk=b"DICM")

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(gateway.grpc_port, ingest_client).Store(bad())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_file_over_the_size_limit_is_refused(start_gateway, ingest_client) -> None:
    gateway = await start_gateway(max_file_bytes=2048)
    ct = sample_path("CT_small.dcm").read_bytes()
    response = await _stub(gateway.grpc_port, ingest_client).Store(_files(("ct", ct)))
    assert response.results[0].outcome == Outcome.STORE_OUTCOME_REFUSED
    assert "larger than" in response.results[0].reason


async def _stored(storage_app, tenant: str) -> list[str]:
    """SOP Instance UIDs storage holds for ``tenant``."""
    channel = open_channel(f"127.0.0.1:{storage_app.grpc_port}", client_tls())
    _channels.append(channel)
    return [
        info.instance.sop_instance_uid async for info in StorageClient(channel).list_all(tenant)
    ]


@pytest.mark.integration
async def test_store_without_token_is_unauthenticated_and_stores_nothing(
    start_gateway, storage_app, tenant: str
) -> None:
    gateway = await start_gateway(storage_target=f"127.0.0.1:{storage_app.grpc_port}")
    ct = sample_path("CT_small.dcm").read_bytes()
    stub = _stub(gateway.grpc_port, None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Store(_files(("ct", ct), tenant=tenant))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as echo:
        await stub.Echo(pb.EchoRequest())
    assert echo.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await _stored(storage_app, tenant) == []


@pytest.mark.integration
async def test_store_into_another_tenant_is_permission_denied_and_stores_nothing(
    start_gateway, storage_app, tenant: str, ingest_client: ClientCredentials
) -> None:
    gateway = await start_gateway(storage_target=f"127.0.0.1:{storage_app.grpc_port}")
    other = f"{tenant}-other"
    ct = sample_path("CT_small.dcm").read_bytes()
    j2k = sample_path("JPEG2000.dcm").read_bytes()

    async def own_then_other() -> AsyncIterator[pb.StoreRequest]:
        # The own-tenant file is refused too: the next header is checked before it is stored.
        async for message in _files(("ct", ct)):
            yield message
        async for message in _files(("j2k", j2k), tenant=other):
            yield message

    stub = _stub(gateway.grpc_port, ingest_client)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Store(own_then_other())
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await _stored(storage_app, other) == []
    assert await _stored(storage_app, tenant) == []

    # A header without a tenant means the token's.
    response = await stub.Store(_files(("ct", ct)))
    assert response.results[0].outcome == Outcome.STORE_OUTCOME_STORED
    assert response.results[0].object.instance.tenant == tenant


@pytest.mark.integration
async def test_store_without_the_ingest_role_is_permission_denied(
    start_gateway, storage_app, hydra: Hydra, tenant: str
) -> None:
    gateway = await start_gateway(storage_target=f"127.0.0.1:{storage_app.grpc_port}")
    ct = sample_path("CT_small.dcm").read_bytes()
    stub = _stub(gateway.grpc_port, hydra.client(tenant, [Role.QUERY, Role.RETRIEVE]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Store(_files(("ct", ct), tenant=tenant))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await _stored(storage_app, tenant) == []


@pytest.mark.integration
async def test_a_large_file_is_streamed_not_held_in_memory(
    start_gateway, storage_app, tenant: str, ingest_client: ClientCredentials
) -> None:
    """A 160 MiB file goes through IngestService with far less than its size held in Python
    memory at any time (the spool keeps 8 MiB in memory, the rest on disk; the upload to
    storage is chunked), and is stored bit-exact."""
    import io  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415

    from pydicom.dataset import Dataset, FileMetaDataset  # noqa: PLC0415
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: PLC0415

    dataset = Dataset()
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.add_new(0x7FE00010, "OB", bytes(range(256)) * (160 * 4096))
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    del dataset, out
    gateway = await start_gateway(storage_target=f"127.0.0.1:{storage_app.grpc_port}")

    async def messages() -> AsyncIterator[pb.StoreRequest]:
        yield pb.StoreRequest(header=pb.StoreFileHeader(tenant=tenant, client_file_id="big"))
        view = memoryview(data)
        for start in range(0, len(data), 1024 * 1024):
            yield pb.StoreRequest(chunk=bytes(view[start : start + 1024 * 1024]))

    tracemalloc.start()
    try:
        response = await _stub(gateway.grpc_port, ingest_client).Store(messages())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (result,) = response.results
    assert result.outcome == Outcome.STORE_OUTCOME_STORED, result.reason
    assert result.object.sha256 == hashlib.sha256(data).hexdigest()
    # client, gateway and storage share this process: all of them together stay well under
    # the file's size (the whole-file buffering this replaces held it twice)
    assert peak < len(data) // 2, (peak, len(data))
