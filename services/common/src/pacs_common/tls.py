"""Mutual TLS for every gRPC connection between cloudpacs processes, on by default.

Every process has an identity (``gateway``, ``storage``, ``indexer``, ``cli``, …): a certificate
whose subject common name is that identity, signed by the deployment's CA. A server presents its
certificate and requires one from the caller (``require_client_auth``), so a caller without a
certificate from the CA is refused during the handshake, before any request is read. Which
identities may call which service is decided afterwards, per call, by
:class:`pacs_common.peers.PeerAuthorizationInterceptor`.

Where the files come from (``PACS_TLS_*``):

- locally, ``PACS_TLS_DIR`` names the directory made by ``make up`` or
  ``python -m pacs_common.pki DIR NAME...`` (:mod:`pacs_common.pki`): ``ca.crt`` and
  ``<identity>.crt``/``<identity>.key``; the identity defaults to the service's name;
- in Kubernetes, ``PACS_TLS_CA_FILE``/``PACS_TLS_CERT_FILE``/``PACS_TLS_KEY_FILE`` name the files
  of the mounted Secret (``ca.crt``, ``tls.crt``, ``tls.key``, as cert-manager writes them).

Plaintext only when ``PACS_TLS_ENABLED=false`` is set explicitly; the host then logs a WARNING.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The identities the local stack creates certificates for (``make up``, tests).
LOCAL_IDENTITIES = (
    "gateway",
    "storage",
    "indexer",
    "cli",
    "transcoder",
    "deid",
    "audit",
    "dicomweb",
    "hl7",
    "router",
)


class TlsConfigError(SystemExit):
    """The TLS files are missing or unreadable: the process cannot start (fail fast)."""


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM bytes of one identity: the CA that signs every peer, its certificate and key."""

    ca: bytes
    cert: bytes
    key: bytes


class TlsSettings(BaseSettings):
    """Mutual TLS of gRPC servers and channels (``PACS_TLS_*``)."""

    model_config = SettingsConfigDict(env_prefix="PACS_TLS_", extra="ignore")

    enabled: bool = Field(True, description="mutual TLS; false only for debugging, never deployed")
    dir: Path | None = Field(
        None, description="directory with ca.crt and <identity>.crt/.key (made by `make up`)"
    )
    identity: str = Field(
        "", description="whose certificate to use from `dir`; empty = the service's name"
    )
    ca_file: Path | None = Field(None, description="the CA certificate (overrides dir)")
    cert_file: Path | None = Field(None, description="this process's certificate (overrides dir)")
    key_file: Path | None = Field(None, description="this process's private key (overrides dir)")

    def as_identity(self, name: str) -> TlsSettings:
        """These settings, with ``name`` as the identity unless one was set explicitly."""
        if self.identity:
            return self
        return self.model_copy(update={"identity": name})

    def files(self) -> tuple[Path, Path, Path]:
        """The CA, certificate and key paths.

        Raises:
            TlsConfigError: a path cannot be determined; the message says what to set or run.
        """
        directory = self.dir
        name = self.identity
        ca = self.ca_file or (directory / "ca.crt" if directory else None)
        cert = self.cert_file or (directory / f"{name}.crt" if directory and name else None)
        key = self.key_file or (directory / f"{name}.key" if directory and name else None)
        if ca is None or cert is None or key is None:
            raise TlsConfigError(
                "mutual TLS is on but no certificates are configured: set PACS_TLS_DIR to the "
                "directory made by `make up` (or `python -m pacs_common.pki DIR "
                f"{name or 'IDENTITY'}`), or PACS_TLS_CA_FILE, PACS_TLS_CERT_FILE and "
                "PACS_TLS_KEY_FILE"
            )
        return ca, cert, key

    def material(self) -> TlsMaterial:
        """Read the PEM files once.

        Raises:
            TlsConfigError: a file is missing or unreadable; the message names it.
        """
        ca, cert, key = self.files()
        contents = []
        for path in (ca, cert, key):
            try:
                contents.append(path.read_bytes())
            except OSError as exc:
                hint = (
                    f"run `make up` or `python -m pacs_common.pki {path.parent} "
                    f"{self.identity or 'IDENTITY'}`"
                    if self.dir is not None
                    else "mount the certificate Secret there"
                )
                raise TlsConfigError(
                    f"TLS file {path} cannot be read ({exc.strerror or exc}); {hint}"
                ) from exc
        return TlsMaterial(*contents)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials of a server that presents its certificate and requires the caller's,
        signed by the CA."""
        material = self.material()
        return grpc.ssl_server_credentials(
            [(material.key, material.cert)],
            root_certificates=material.ca,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials of a channel that presents this identity's certificate and trusts only
        servers signed by the CA."""
        material = self.material()
        return grpc.ssl_channel_credentials(
            root_certificates=material.ca,
            private_key=material.key,
            certificate_chain=material.cert,
        )
