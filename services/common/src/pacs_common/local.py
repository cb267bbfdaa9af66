"""The embedded default on one machine: what ``make up`` (``infra/up.sh``) leaves behind.

The endpoints and credentials it writes into ``.cache/run/infra.env``, and the local CA and
certificates in ``.cache/pki``. The ``pacs`` CLI, the tests and the benchmarks all read them
here; the services themselves never do (they get their settings from the environment).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import grpc

from pacs_common.pki import ensure_pki
from pacs_common.tls import LOCAL_IDENTITIES, TlsSettings

REPO = Path(__file__).resolve().parents[4]
"""The checkout this package is installed from (an editable workspace install)."""
PKI_DIR = REPO / ".cache" / "pki"


INFRA_ENV_FILES = (
    REPO / ".cache" / "run" / "hydra" / "clients.env",
    REPO / ".cache" / "run" / "infra.env",
)
"""What ``infra/up.sh`` writes: the OAuth clients ``infra/hydra.sh`` provisioned (also copied
into infra.env, read on their own in case an older up.sh rewrote infra.env), then endpoints."""


def load_infra_env() -> dict[str, str]:
    """Endpoints written by ``infra/up.sh`` (empty if the infrastructure never started)."""
    values: dict[str, str] = {}
    for path in INFRA_ENV_FILES:
        if path.exists():
            for line in path.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep and not key.startswith("#"):
                    values[key.strip()] = value.strip()
    return values


def infra_environment() -> dict[str, str]:
    """The process environment, plus the ``infra/up.sh`` endpoints it does not set itself, plus
    the local certificate directory (``PACS_TLS_DIR``) unless either names one."""
    return {"PACS_TLS_DIR": str(PKI_DIR), **load_infra_env(), **os.environ}


def tls_dir() -> Path:
    """Where the local certificates are: ``PACS_TLS_DIR`` (environment, then ``infra.env``),
    else ``.cache/pki`` of this checkout."""
    return Path(infra_environment()["PACS_TLS_DIR"])


def ensure_local_pki() -> Path:
    """Create the local CA and the certificates of every local identity if missing (idempotent,
    the same files ``infra/up.sh`` makes); returns their directory."""
    directory = tls_dir()
    ensure_pki(directory, LOCAL_IDENTITIES)
    return directory


def client_tls(identity: str = "cli") -> TlsSettings:
    """TLS settings of a local client: ``PACS_TLS_*`` from the environment, the local
    certificate directory by default, acting as ``identity`` (the CLI, tests, benches)."""
    settings = TlsSettings()
    if settings.dir is None:
        settings = settings.model_copy(update={"dir": tls_dir()})
    return settings.as_identity(identity)


def sync_channel(target: str, tls: TlsSettings | None = None) -> grpc.Channel:
    """A blocking channel to ``target`` with mutual TLS (as ``cli`` unless ``tls`` says)."""
    tls = tls or client_tls()
    if not tls.enabled:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, tls.channel_credentials())


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port free on loopback right now, and never returned before by this process.

    The kernel may give the same port to two ``bind(0)`` calls once the first socket is closed,
    and a caller that takes several ports before binding any (a test stack's services) then
    got one port twice: a CI run's e2e stack had its DICOM port equal to storage's gRPC port.
    """
    with _handed_out_lock:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
