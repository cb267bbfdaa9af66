"""The connection options of every aiokafka client, built in one place from :class:`KafkaSettings`.

Every producer, consumer and admin client of cloudpacs (services, the ``pacs`` CLI, tests,
benchmarks) is constructed with ``**kafka_client_options(settings)``, so that one setting changes
how all of them reach the brokers: bootstrap servers, ``security_protocol``, the SASL mechanism
and credentials, and the TLS context (the CA the brokers' certificates chain to; a client
certificate when the brokers ask for one). aiokafka needs an :class:`ssl.SSLContext` object, not
file names, which is why this is a function and not a plain mapping of settings.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from pacs_common.settings import KafkaSettings


def kafka_ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """A client TLS context that verifies the brokers' certificates and host names.

    Trusts ``ssl_ca_file`` when set (the local CA of ``make up``, or a deployment's), the
    system's trust store otherwise; presents ``ssl_cert_file``/``ssl_key_file`` when set.
    """
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.ssl_ca_file,
        certfile=settings.ssl_cert_file,
        keyfile=settings.ssl_key_file,
    )
    return context


def kafka_client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and
    ``AIOKafkaAdminClient``: where the brokers are and how to authenticate to them.

    Callers add their own role's options (``client_id``, ``acks``, ``group_id`` ...).
    """
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "security_protocol": settings.security_protocol,
    }
    if settings.uses_tls:
        options["ssl_context"] = kafka_ssl_context(settings)
    if settings.uses_sasl:
        # KafkaSettings' validator guarantees both are present for a SASL protocol.
        assert settings.sasl_username is not None and settings.sasl_password is not None
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return options
