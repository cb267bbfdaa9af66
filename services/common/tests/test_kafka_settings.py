"""KafkaSettings and the aiokafka options built from them, without a broker."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pacs_common.kafka_client import kafka_client_options
from pacs_common.pki import ensure_pki
from pacs_common.settings import KafkaSettings, ServiceSettings
from pydantic import Field


class _WithKafka(ServiceSettings):
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)


@pytest.fixture(autouse=True)
def _no_kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test sets: none of the developer's infra.env values."""
    for name in (
        "PACS_TLS_DIR",
        "PACS_KAFKA_SECURITY_PROTOCOL",
        "PACS_KAFKA_SASL_MECHANISM",
        "PACS_KAFKA_SASL_USERNAME",
        "PACS_KAFKA_SASL_PASSWORD",
        "PACS_KAFKA_SSL_CA_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


def test_sasl_without_credentials_stops_the_service_naming_the_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PACS_KAFKA_SASL_USERNAME", "pacs")
    with pytest.raises(SystemExit) as stopped:
        _WithKafka.load()
    assert "PACS_KAFKA_SASL_PASSWORD" in str(stopped.value)
    assert "PACS_KAFKA_SASL_USERNAME" not in str(stopped.value)


def test_sasl_ssl_options_carry_credentials_and_trust_the_local_ca(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ensure_pki(tmp_path, [])
    monkeypatch.setenv("PACS_TLS_DIR", str(tmp_path))
    monkeypatch.setenv("PACS_KAFKA_SASL_USERNAME", "pacs")
    monkeypatch.setenv("PACS_KAFKA_SASL_PASSWORD", "s3cret")
    settings = KafkaSettings(bootstrap="broker:9093")

    assert settings.ssl_ca_file == tmp_path / "ca.crt"
    assert "s3cret" not in repr(settings)
    options = kafka_client_options(settings)
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "broker:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "pacs",
        "sasl_plain_password": "s3cret",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "cloudpacs local CA"),),)
    ]


def test_plaintext_needs_no_credentials_and_gets_no_tls() -> None:
    options = kafka_client_options(
        KafkaSettings(bootstrap="kafka:9092", security_protocol="PLAINTEXT")
    )
    assert options == {"bootstrap_servers": "kafka:9092", "security_protocol": "PLAINTEXT"}
