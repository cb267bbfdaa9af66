"""One C-STORE is one trace: gateway → storage (gRPC grant and commit) → Kafka → indexer, with
the trace context carried in gRPC metadata and Kafka record headers (W3C traceparent)."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pacs.query.v1 import query_service_pb2, query_service_pb2_grpc
from pacs_common.auth import AuthSettings, Role
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.oauth_client import ClientCredentials, bearer_interceptors
from pacs_common.settings import S3Settings
from pacs_gateway.app import create_app as create_gateway
from pacs_gateway.settings import GatewaySettings
from pacs_storage.app import create_app as create_storage
from pacs_storage.settings import StorageSettings
from pacs_testkit.hydra import Hydra
from pacs_testkit.indexer import start_indexer
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Record every span of this process (the three services run in it)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    exporter.clear()
    processor.shutdown()


def send_ct(dicom_port: int) -> str:
    ds = copy.deepcopy(dcmread(str(get_testdata_file("CT_small.dcm"))))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ae = AE(ae_title="TRACETEST")
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", dicom_port, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
        assert status and status.Status == 0x0000
    finally:
        assoc.release()
    return str(ds.SOPInstanceUID)


async def wait_indexed(
    indexer_port: int, sop_uid: str, credentials: ClientCredentials, timeout_s: float = 30
) -> None:
    channel = open_channel(
        f"127.0.0.1:{indexer_port}", client_tls(), interceptors=bearer_interceptors(credentials)
    )
    stub = query_service_pb2_grpc.QueryServiceStub(channel)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            reply = await stub.FindInstances(
                query_service_pb2.FindInstancesRequest(
                    query=query_service_pb2.Query(
                        tenant="default", match={"SOPInstanceUID": sop_uid}
                    )
                )
            )
            if reply.total_count:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"instance not indexed within {timeout_s}s")
    finally:
        await channel.close()


def names(trace_spans: list[ReadableSpan]) -> set[tuple[str, SpanKind]]:
    return {(span.name, span.kind) for span in trace_spans}


async def test_one_c_store_is_one_trace_from_gateway_to_indexer(
    infra_env: dict[str, str], spans: InMemorySpanExporter, tmp_path: Path, hydra: Hydra
) -> None:
    storage = create_storage(
        StorageSettings(
            grpc_port=0, s3=S3Settings(bucket=f"trace-{uuid.uuid4().hex[:16]}"), shutdown_grace_s=1
        )
    )
    await storage.start()
    # As deployed, the indexer trusts the gateway (its C-FIND and its duplicate check query the
    # index for the callers it admitted).
    indexer = await start_indexer(
        storage.grpc_port,
        tmp_path / "index.sqlite",
        shutdown_grace_s=1,
        auth=AuthSettings(trusted_services={"gateway"}),
    )
    gateway = create_gateway(
        GatewaySettings(
            dicom_port=0,
            grpc_port=0,
            storage_target=f"127.0.0.1:{storage.grpc_port}",
            indexer_target=f"127.0.0.1:{indexer.grpc_port}",
            shutdown_grace_s=1,
            workers=1,
        )
    )
    await gateway.start()
    try:
        spans.clear()
        sop_uid = await asyncio.to_thread(send_ct, gateway.dicom_port)
        await wait_indexed(indexer.grpc_port, sop_uid, hydra.client("default", [Role.QUERY]))
        await asyncio.sleep(0.5)  # the indexer's InstanceIndexed publish ends after the upsert
    finally:
        gateway.close()
        await indexer.stop()
        await storage.stop()

    finished = list(spans.get_finished_spans())
    # The gateway writes through a grant: GrantWrite, the PUT straight to S3, CommitWrite.
    commit_client = [
        s
        for s in finished
        if s.name == "/pacs.storage.v1.StorageService/CommitWrite" and s.kind == SpanKind.CLIENT
    ]
    assert len(commit_client) == 1, names(finished)
    trace_id = commit_client[0].context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    expected = {
        ("/pacs.storage.v1.StorageService/GrantWrite", SpanKind.CLIENT),  # gateway
        ("/pacs.storage.v1.StorageService/GrantWrite", SpanKind.SERVER),  # storage
        ("/pacs.storage.v1.StorageService/CommitWrite", SpanKind.CLIENT),  # gateway
        ("/pacs.storage.v1.StorageService/CommitWrite", SpanKind.SERVER),  # storage
        ("publish pacs.instances.v1", SpanKind.PRODUCER),  # storage → Kafka
        ("consume pacs.instances.v1", SpanKind.CONSUMER),  # indexer, from the record headers
    }
    assert expected <= names(in_trace), names(in_trace)
    # The header travels in the event: the indexer never reads it back from storage.
    assert ("/pacs.storage.v1.StorageService/Get", SpanKind.SERVER) not in names(in_trace)
