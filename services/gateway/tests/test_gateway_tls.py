"""DICOM TLS on the second port: certificates made with openssl, clients pynetdicom and DCMTK."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import textwrap
from pathlib import Path

import pytest
from gateway_helpers import closed_port, run_dcmtk, sample_path, write_registry
from pacs_gateway.dimse.codes import VERIFICATION
from pacs_gateway.settings import GatewaySettings
from pacs_gateway.tls import server_ssl_context
from pydantic import ValidationError
from pynetdicom import AE


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away CA, a server certificate for 127.0.0.1 and two client certificates."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=Test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject, ext in (
        ("server", "/CN=localhost", ["-extfile", "server.ext"]),
        ("ct01", "/O=Hospital A/CN=ct01.hospital-a.example", []),
        ("rogue", "/O=Elsewhere/CN=rogue.example", []),
    ):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *ext, cwd=d)  # fmt: skip
    (d / "registry.yaml").write_text(
        textwrap.dedent(
            """
            tenants:
              hospital-a:
                sites:
                  radiology:
                    callers:
                      - ae_title: CT01
                        networks: [127.0.0.0/8]
                        tls_subject: "CN=ct01.hospital-a.example,O=Hospital A"
                      - ae_title: PLAIN
                        networks: [127.0.0.0/8]
            """
        )
    )
    return d


async def _gateway(start_gateway, pki: Path):
    return await start_gateway(
        tls_port=0,
        tls_cert_file=pki / "server.pem",
        tls_key_file=pki / "server.key",
        tls_ca_file=pki / "ca.pem",
        site_registry=pki / "registry.yaml",
    )


def _client_context(pki: Path, name: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    if name is not None:
        context.load_cert_chain(str(pki / f"{name}.pem"), str(pki / f"{name}.key"))
    return context


def _associate(port: int, calling: str, context: ssl.SSLContext | None):
    ae = AE(ae_title=calling)
    ae.add_requested_context(VERIFICATION)
    tls_args = (context, "127.0.0.1") if context is not None else None
    return ae.associate("127.0.0.1", port, ae_title="CLOUDPACS", tls_args=tls_args)


async def test_echo_over_tls_with_the_registered_certificate(start_gateway, pki: Path) -> None:
    gateway = await _gateway(start_gateway, pki)
    assert gateway.tls_port and gateway.tls_port != gateway.dicom_port

    assoc = await asyncio.to_thread(
        _associate, gateway.tls_port, "CT01", _client_context(pki, "ct01")
    )
    assert assoc.is_established
    try:
        assert int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()


async def test_dcmtk_echoscu_over_tls(start_gateway, pki: Path) -> None:
    gateway = await _gateway(start_gateway, pki)
    code, out = await run_dcmtk(
        "echoscu", "-v", "+tls", pki / "ct01.key", pki / "ct01.pem", "+cf", pki / "ca.pem",
        "-aet", "CT01", "-aec", "CLOUDPACS", "127.0.0.1", str(gateway.tls_port),
    )  # fmt: skip
    assert code == 0, out
    assert "Received Echo Response (Success)" in out


@pytest.mark.parametrize(
    ("calling", "certificate", "over_tls"),
    [
        ("CT01", "rogue", True),  # certificate of someone else
        ("CT01", None, True),  # no client certificate
        ("CT01", None, False),  # CT01 must use TLS
    ],
)
async def test_wrong_or_missing_certificate_is_rejected(
    start_gateway, pki: Path, calling: str, certificate: str | None, over_tls: bool
) -> None:
    gateway = await _gateway(start_gateway, pki)
    port = gateway.tls_port if over_tls else gateway.dicom_port
    context = _client_context(pki, certificate) if over_tls else None
    assoc = await asyncio.to_thread(_associate, port, calling, context)
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.diagnostic == 0x03  # calling AE title not recognized


async def test_callers_without_tls_requirement_may_use_either_port(
    start_gateway, pki: Path
) -> None:
    gateway = await _gateway(start_gateway, pki)
    plain = await asyncio.to_thread(_associate, gateway.dicom_port, "PLAIN", None)
    secure = await asyncio.to_thread(
        _associate, gateway.tls_port, "PLAIN", _client_context(pki, None)
    )
    for assoc in (plain, secure):
        assert assoc.is_established
        assoc.release()


def test_server_context_refuses_tls_below_1_2(pki: Path) -> None:
    context = server_ssl_context(
        GatewaySettings(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key")
    )
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2  # BCP 195, PS3.15 B.9
    assert context.verify_mode == ssl.CERT_NONE  # no CA configured: no client certificates


async def test_client_certificate_required_when_configured(start_gateway, pki: Path) -> None:
    gateway = await start_gateway(
        tls_port=0,
        tls_cert_file=pki / "server.pem",
        tls_key_file=pki / "server.key",
        tls_ca_file=pki / "ca.pem",
        tls_require_client_cert=True,
    )
    without = await asyncio.to_thread(
        _associate, gateway.tls_port, "ANYONE", _client_context(pki, None)
    )
    assert not without.is_established
    with_cert = await asyncio.to_thread(
        _associate, gateway.tls_port, "ANYONE", _client_context(pki, "rogue")
    )
    assert with_cert.is_established  # any certificate of the CA; no registry configured
    with_cert.release()


def _tls_args(pki: Path, name: str) -> list[str | Path]:
    """DCMTK options for a TLS association with ``name``'s certificate."""
    return ["+tls", pki / f"{name}.key", pki / f"{name}.pem", "+cf", pki / "ca.pem"]


@pytest.mark.asyncio(loop_scope="session")
async def test_tls_only_serves_dicom_over_tls_and_nothing_in_the_clear(
    start_connected_gateway, pki: Path, tmp_path: Path, tenant: str
) -> None:
    registry = write_registry(
        tmp_path / "registry.yaml",
        {
            tenant: {
                "callers": [
                    {
                        "ae_title": "CT01",
                        "networks": ["127.0.0.0/8"],
                        "tls_subject": "CN=ct01.hospital-a.example,O=Hospital A",
                    }
                ]
            }
        },
    )
    would_be_plain = closed_port()
    gateway = await start_connected_gateway(
        tls_only=True,
        dicom_port=would_be_plain,
        tls_port=0,
        tls_cert_file=pki / "server.pem",
        tls_key_file=pki / "server.key",
        tls_ca_file=pki / "ca.pem",
        site_registry=registry,
    )
    assert gateway.tls_port and gateway.dicom_port == 0
    port = str(gateway.tls_port)

    code, out = await run_dcmtk(
        "echoscu", "-v", *_tls_args(pki, "ct01"), "-aet", "CT01", "-aec", "CLOUDPACS",
        "127.0.0.1", port,
    )  # fmt: skip
    assert code == 0, out
    assert "Received Echo Response (Success)" in out
    code, out = await run_dcmtk(
        "storescu", "-v", *_tls_args(pki, "ct01"), "-aet", "CT01", "-aec", "CLOUDPACS",
        "127.0.0.1", port, sample_path("CT_small.dcm"),
    )  # fmt: skip
    assert code == 0, out
    assert "Received Store Response (Success)" in out

    # Nothing listens on the plaintext port it would have had, and the TLS port speaks no
    # plaintext DICOM.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", would_be_plain), timeout=5).close()
    for plain_port in (str(would_be_plain), port):
        code, out = await run_dcmtk(
            "echoscu", "-to", "5", "-aet", "CT01", "-aec", "CLOUDPACS", "127.0.0.1", plain_port
        )
        assert code != 0, out


def test_tls_only_without_a_tls_port_is_refused_at_start_up(pki: Path) -> None:
    with pytest.raises(ValidationError, match="PACS_GATEWAY_TLS_ONLY needs PACS_GATEWAY_TLS_PORT"):
        GatewaySettings(
            tls_only=True, tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key"
        )
    with pytest.raises(
        ValidationError,
        match="PACS_GATEWAY_TLS_ONLY needs PACS_GATEWAY_TLS_CERT_FILE, PACS_GATEWAY_TLS_KEY_FILE",
    ):
        GatewaySettings(tls_only=True, tls_port=2762)
