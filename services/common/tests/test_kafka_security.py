"""Kafka is reached over SASL_SSL with SCRAM-SHA-512, and only that way.

Against the real local broker of ``infra/up.sh`` (endpoint and credentials from its env file):
the services' publisher and a consumer built from the same settings exchange an event; a
plaintext client, a wrong password and a client that does not trust the broker's CA are all
refused, each for its own reason.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.conn import AIOKafkaConnection, create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from pacs.events.v1 import instance_events_pb2
from pacs.type.v1 import instance_pb2
from pacs_common.errors import UnavailableError
from pacs_common.events import EventPublisher, event_type, header
from pacs_common.kafka_client import kafka_client_options
from pacs_common.pki import ensure_pki
from pacs_common.settings import KafkaSettings
from pydantic import SecretStr

pytestmark = pytest.mark.integration


@pytest.fixture
def kafka(infra_env: dict[str, str]) -> KafkaSettings:
    """The settings the services get from ``.cache/run/infra.env``, short timeouts."""
    settings = KafkaSettings(request_timeout_ms=5_000)
    assert settings.security_protocol == "SASL_SSL", "infra.env predates SASL_SSL: run make up"
    return settings


async def _connect(settings: KafkaSettings) -> AIOKafkaConnection:
    """One connection to the first bootstrap broker with these settings' security options
    (the bootstrap of a producer hides why a connection failed; this shows it)."""
    options = kafka_client_options(settings)
    host, _, port = settings.bootstrap.split(",")[0].rpartition(":")
    return await asyncio.wait_for(
        create_conn(
            host,
            int(port),
            security_protocol=options["security_protocol"],
            ssl_context=options.get("ssl_context"),
            sasl_mechanism=options.get("sasl_mechanism", "PLAIN"),
            sasl_plain_username=options.get("sasl_plain_username"),
            sasl_plain_password=options.get("sasl_plain_password"),
        ),
        timeout=10,
    )


async def test_publisher_and_consumer_exchange_an_event_over_sasl_ssl(
    kafka: KafkaSettings,
) -> None:
    topic = f"test.kafka-security.{uuid.uuid4().hex[:12]}"
    event = instance_events_pb2.InstanceDeleted(
        instance=instance_pb2.InstanceRef(tenant="t-security", sop_instance_uid="1.2.3")
    )
    publisher = EventPublisher(kafka, "test-security")
    await publisher.start()
    try:
        await publisher.publish(topic, "1.2", event)
    finally:
        await publisher.stop()

    consumer = AIOKafkaConsumer(
        **kafka_client_options(kafka), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        for _ in range(50):
            if partitions:
                break
            await consumer._client.force_metadata_update()  # no public refresh in aiokafka
            partitions = consumer.partitions_for_topic(topic) or set()
            await asyncio.sleep(0.1)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        record = await asyncio.wait_for(consumer.getone(), timeout=15)
    finally:
        await consumer.stop()
    assert header(record, "ce_type") == event_type(event)
    assert instance_events_pb2.InstanceDeleted.FromString(record.value) == event


async def test_plaintext_client_is_refused(kafka: KafkaSettings) -> None:
    plaintext = kafka.model_copy(update={"security_protocol": "PLAINTEXT"})
    with pytest.raises(KafkaConnectionError):
        conn = await _connect(plaintext)
        conn.close()
    publisher = EventPublisher(plaintext, "test-security")
    with pytest.raises(UnavailableError):
        await publisher.start()


async def test_wrong_password_is_refused_by_authentication(kafka: KafkaSettings) -> None:
    wrong = kafka.model_copy(update={"sasl_password": SecretStr("not-the-password")})
    with pytest.raises(SaslAuthenticationFailed):
        conn = await _connect(wrong)
        conn.close()
    publisher = EventPublisher(wrong, "test-security")
    with pytest.raises(UnavailableError):
        await publisher.start()


async def test_client_that_does_not_trust_the_ca_fails_the_handshake(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    ensure_pki(tmp_path, [])  # another CA, which never signed the broker's certificate
    distrustful = kafka.model_copy(update={"ssl_ca_file": tmp_path / "ca.crt"})
    with pytest.raises(ssl.SSLCertVerificationError):
        conn = await _connect(distrustful)
        conn.close()
