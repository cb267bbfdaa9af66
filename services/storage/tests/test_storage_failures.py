"""Bad requests change nothing; S3 or Kafka down gives UNAVAILABLE; Kafka coming back heals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pacs.events.v1 import instance_events_pb2
from pacs.storage.v1 import storage_service_pb2 as pb
from pacs.storage.v1 import storage_service_pb2_grpc as pb_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import PacsError
from pacs_common.events import EventPublisher
from pacs_common.settings import KafkaSettings, S3Settings
from pacs_storage.app import StorageApp
from pacs_storage.settings import StorageSettings
from pacs_testkit.channels import plain_aio_channel
from storage_testkit import (
    InstanceEvents,
    address_of,
    closed_port,
    for_tenant,
    sample_part10,
    stored_keys,
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant", ""),
        ("tenant", "Upper-Case"),
        ("tenant", "a/b"),
        ("study_instance_uid", ""),
        ("study_instance_uid", "1.2.03"),
        ("series_instance_uid", "1.2.abc"),
        ("sop_instance_uid", "1." + "2" * 70),
        ("sop_instance_uid", "../../etc"),
        ("sop_class_uid", "not-a-uid"),
    ],
)
async def test_invalid_address_is_rejected_and_nothing_is_stored(
    client: StorageClient, tenant: str, raw_s3: Any, bucket_name: str, field: str, value: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    setattr(ref, field, value)

    with pytest.raises(PacsError) as raised:
        await client.put(ref, data)

    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert stored_keys(raw_s3, bucket_name) == []


async def test_put_must_start_with_its_header(
    app: StorageApp, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    async def chunk_first() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(chunk=data)
        yield pb.PutRequest(header=pb.PutHeader(instance=ref))

    async def two_headers() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(header=pb.PutHeader(instance=ref))
        yield pb.PutRequest(chunk=data)
        yield pb.PutRequest(header=pb.PutHeader(instance=ref))

    async def nothing() -> AsyncIterator[pb.PutRequest]:
        return
        yield  # an empty async generator

    async def header_only() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(header=pb.PutHeader(instance=ref))

    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as chan:
        stub = pb_grpc.StorageServiceStub(chan)
        for requests in (chunk_first, two_headers, nothing, header_only):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Put(requests())
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, requests.__name__
    assert stored_keys(raw_s3, bucket_name) == []


async def test_bytes_that_differ_from_expected_sha256_are_refused(
    client: StorageClient, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    with pytest.raises(PacsError) as raised:
        await client.put(ref, data, expected_sha256="0" * 64)

    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert stored_keys(raw_s3, bucket_name) == []


async def test_unknown_version_id_is_rejected_or_not_found(
    client: StorageClient, tenant: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    await client.put(ref, data)

    with pytest.raises(PacsError) as malformed:
        await client.get(address_of(ref), version_id="../x")
    with pytest.raises(PacsError) as unknown:
        await client.head(address_of(ref), version_id="20000101T000000000000Z-0000")

    assert malformed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND


async def test_s3_unreachable_gives_unavailable(
    start_app: Any, infra_env: dict[str, str], tenant: str
) -> None:
    settings = StorageSettings(
        grpc_port=0,
        s3=S3Settings(endpoint=f"http://127.0.0.1:{closed_port()}", max_attempts=1),
        kafka=KafkaSettings(),
    )
    app = await start_app(settings)  # starts although S3 is down
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as chan:
        client = StorageClient(chan, timeout=30)
        calls = (
            client.put(ref, data),
            client.get(address_of(ref)),
            client.head(address_of(ref)),
            client.list(tenant),
        )
        for call in calls:
            with pytest.raises(PacsError) as raised:
                await call
            assert raised.value.code == grpc.StatusCode.UNAVAILABLE


class KafkaDoor:
    """A loopback port that refuses connections until opened, then forwards to Kafka: Kafka
    "comes back" for a service whose bootstrap address is this port."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.port = closed_port()
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def service_health(port: int) -> int:
    async with plain_aio_channel(f"127.0.0.1:{port}") as chan:
        stub = health_pb2_grpc.HealthStub(chan)
        reply = await stub.Check(
            health_pb2.HealthCheckRequest(service="pacs.storage.v1.StorageService")
        )
        return int(reply.status)


async def test_kafka_unreachable_gives_unavailable_until_it_comes_back(
    start_app: Any, storage_settings: StorageSettings, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    door = KafkaDoor(KafkaSettings().bootstrap)
    settings = storage_settings.model_copy(
        update={"kafka": KafkaSettings(bootstrap=f"127.0.0.1:{door.port}", request_timeout_ms=3000)}
    )
    app = await start_app(settings)  # starts although Kafka is down
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    try:
        async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as chan:
            client = StorageClient(chan, timeout=30)
            with pytest.raises(PacsError) as raised:
                await client.put(ref, data)
            assert raised.value.code == grpc.StatusCode.UNAVAILABLE
            assert stored_keys(raw_s3, bucket_name) == []  # never stored-but-unannounced
            assert await service_health(app.grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING

            await door.open()
            for _ in range(100):
                if await service_health(app.grpc_port) == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.1)
            response = await client.put(ref, data)
    finally:
        await app.stop()
        await door.close()

    assert not response.already_existed
    assert stored_keys(raw_s3, bucket_name) == [response.object.key]


async def test_delete_and_list_validate_their_arguments(client: StorageClient) -> None:
    bad = instance_pb2.InstanceRef(tenant="t", study_instance_uid="1.2")
    for call in (
        client.delete(bad),
        client.list(""),
        client.list("t", "", "1.2.3"),
        client.list("t", "1.2.x"),
    ):
        with pytest.raises(PacsError) as raised:
            await call
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_kafka_failing_after_the_write_is_healed_by_the_retry(
    start_app: Any,
    storage_settings: StorageSettings,
    events: InstanceEvents,
    tenant: str,
    raw_s3: Any,
    bucket_name: str,
) -> None:
    app = await start_app(storage_settings.model_copy(update={"kafka_retry_s": 3.0}))
    # The brokers stop acknowledging right after S3 stored the object (simulated by swapping
    # in a publisher that never connected, at the moment PutObject returns).
    broken = EventPublisher(KafkaSettings(bootstrap=f"127.0.0.1:{closed_port()}"), "storage")

    def broker_fails(**kwargs: Any) -> None:
        app.s3.meta.events.unregister("after-call.s3.PutObject", broker_fails)
        app.announcer._publisher = broken

    app.s3.meta.events.register("after-call.s3.PutObject", broker_fails)
    data = sample_part10()
    ref = instance_ref_of(data, tenant)
    other = sample_part10("MR_small.dcm")
    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as chan:
        client = StorageClient(chan, timeout=30)
        with pytest.raises(PacsError) as raised:
            await client.put(ref, data)
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE
        assert len(stored_keys(raw_s3, bucket_name)) == 1  # stored, not yet announced
        # Until Kafka answers again, Puts fail at once and store nothing more.
        assert await service_health(app.grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(PacsError) as meanwhile:
            await client.put(instance_ref_of(other, tenant), other)
        assert meanwhile.value.code == grpc.StatusCode.UNAVAILABLE
        assert len(stored_keys(raw_s3, bucket_name)) == 1

        for _ in range(150):  # the announcer reconnects by itself (real Kafka)
            if await service_health(app.grpc_port) == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.1)
        retried = await client.put(ref, data)
    event = await events.next(for_tenant(tenant))

    assert retried.already_existed
    assert isinstance(event.message, instance_events_pb2.InstanceStored)
    assert event.message.object == retried.object


async def test_object_above_the_size_limit_is_refused(
    start_app: Any, storage_settings: StorageSettings, tenant: str, raw_s3: Any, bucket_name: str
) -> None:
    app = await start_app(storage_settings.model_copy(update={"max_object_size": 10_000}))
    data = sample_part10()

    async with plain_aio_channel(f"127.0.0.1:{app.grpc_port}") as chan:
        with pytest.raises(PacsError) as raised:
            await StorageClient(chan).put(instance_ref_of(data, tenant), data)

    # The client's one translation keeps the status in the message (DIMSE answers it with
    # "out of resources", see pacs_common.clients.errors).
    assert raised.value.message.startswith("storage: resource_exhausted")
    assert stored_keys(raw_s3, bucket_name) == []
