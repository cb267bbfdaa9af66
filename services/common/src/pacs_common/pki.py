"""A local certificate authority for mutual TLS between cloudpacs processes.

``make up`` and the tests need a CA and one certificate per service (gateway, storage, indexer,
the ``pacs`` CLI, the Kafka broker) with no step for a person. In a deployment the same files
come from Kubernetes Secrets (or cert-manager); nothing here runs there.

Each identity's certificate carries the identity as its subject common name, which is what a
server reads as the caller's name (``x509_common_name`` in gRPC's auth context), and loopback
names as subject alternative names so that every process can serve on this machine. Keys are
ECDSA P-256 in unencrypted PKCS#8 PEM, which grpcio, OpenSSL and Kafka's PEM key store all read.

Usage: ``python -m pacs_common.pki DIRECTORY IDENTITY [IDENTITY ...]`` (idempotent).
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "cloudpacs local CA"
_CA_DAYS = 3650
_LEAF_DAYS = 397  # the longest validity browsers accept; renewed at the next `make up`
_RENEW_BEFORE = datetime.timedelta(days=30)
_LOOPBACK_DNS = ("localhost",)
_LOOPBACK_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class Identity:
    """Where one identity's certificate and key live."""

    name: str
    cert_file: Path
    key_file: Path


def ca_files(directory: Path) -> tuple[Path, Path]:
    """The CA certificate and key paths in ``directory``."""
    return directory / "ca.crt", directory / "ca.key"


def identity_files(directory: Path, name: str) -> Identity:
    """The certificate and key paths of identity ``name`` in ``directory``."""
    return Identity(name, directory / f"{name}.crt", directory / f"{name}.key")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only, atomically (no half-written key is ever read)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _still_good(cert_file: Path, issuer: x509.Certificate | None) -> bool:
    """True when the certificate exists, is not about to expire and was signed by ``issuer``."""
    if not cert_file.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    if cert.not_valid_after_utc - _RENEW_BEFORE < _now():
        return False
    if issuer is None:
        return True
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):  # another CA, or a different key type
        return False
    return True


def ensure_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the CA in ``directory``, creating it first if it is missing or expiring."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = ca_files(directory)
    if key_file.exists() and _still_good(cert_file, None):
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SystemExit(f"{key_file} is not an EC key; delete {directory} to make a new CA")
        return x509.load_pem_x509_certificate(cert_file.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_file, _key_pem(key))
    _write_public(cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(
    directory: Path,
    name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    extra_hosts: Iterable[str] = (),
) -> Identity:
    """Issue (or keep) the certificate of identity ``name``, for serving and for calling.

    Args:
        directory: where the CA and the identities live.
        name: the identity; becomes the subject common name and a DNS alternative name.
        ca: the CA certificate and key from :func:`ensure_ca`.
        extra_hosts: further DNS names or IP addresses the identity serves on.
    """
    files = identity_files(directory, name)
    ca_cert, ca_key = ca
    if files.key_file.exists() and _still_good(files.cert_file, ca_cert):
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(name)]
    for host in (*_LOOPBACK_DNS, *_LOOPBACK_IPS, *extra_hosts):
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.key_file, _key_pem(key))
    _write_public(files.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return files


def ensure_pki(directory: Path, names: Iterable[str]) -> dict[str, Identity]:
    """The CA and one certificate per name in ``directory``, created where missing or expiring.

    Processes that run this at once (``make up``, test sessions) take turns on a lock file, so
    they never create two different CAs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ca = ensure_ca(directory)
        return {name: issue(directory, name, ca) for name in names}


def main(argv: list[str]) -> int:
    """``python -m pacs_common.pki DIRECTORY IDENTITY...``: make sure every identity exists."""
    if len(argv) < 2:
        print("usage: python -m pacs_common.pki DIRECTORY IDENTITY [IDENTITY ...]", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    made = ensure_pki(directory, argv[1:])
    print(f"certificates in {directory}: CA and {', '.join(sorted(made))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
