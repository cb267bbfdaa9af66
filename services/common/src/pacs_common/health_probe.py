"""``python -m pacs_common.health_probe --port N``: the Kubernetes probe of a mutual-TLS server.

The kubelet's native gRPC probe speaks plaintext only (it cannot present a client certificate,
nor verify a server's), so against a server that requires mutual TLS it fails at the handshake.
The chart runs this instead, as an exec probe inside the pod: it calls ``grpc.health.v1`` on
127.0.0.1 with the pod's own certificate (``PACS_TLS_*``, the same files the service serves
with). The service's own certificate names the service, not 127.0.0.1, so the server name checked
is the first DNS name of that certificate (the server presents the same one). Health answers
every CA-signed peer (:data:`pacs_common.peers.OPEN_SERVICES`).

Exit status 0 when the service (``--service``, default the whole server) is SERVING, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pacs_common.tls import TlsSettings


def _server_name(cert_pem: bytes) -> str | None:
    """The first DNS name of a certificate (its common name when it has none)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = names.value.get_values_for_type(x509.DNSName)
        if dns:
            return str(dns[0])
    except x509.ExtensionNotFound:
        pass
    common = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(common[0].value) if common else None


def check(port: int, service: str, timeout_s: float, tls: TlsSettings) -> bool:
    """True when the server on 127.0.0.1:``port`` reports ``service`` SERVING."""
    target = f"127.0.0.1:{port}"
    if tls.enabled:
        material = tls.material()
        options = []
        name = _server_name(material.cert)
        if name:
            options.append(("grpc.ssl_target_name_override", name))
        channel = grpc.secure_channel(target, tls.channel_credentials(), options=options)
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            print(f"health check failed: {exc.code()}: {exc.details()}", file=sys.stderr)
            return False
    serving = bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    if not serving:
        print(f"not serving: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
    return serving


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, probe once, and return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the service's gRPC port")
    parser.add_argument("--service", default="", help="health service name ('' = the server)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds for the call")
    args = parser.parse_args(argv)
    return 0 if check(args.port, args.service, args.timeout, TlsSettings()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
