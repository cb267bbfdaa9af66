"""Start and stop the cloudpacs services as local processes.

Used by ``pacs up``/``pacs down`` and by the end-to-end tests, which run a stack of their own
on free ports beside any stack a developer has running. Where the local infrastructure and
certificates are comes from :mod:`pacs_common.local`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pacs_common.local import REPO, ensure_local_pki, load_infra_env, sync_channel, tls_dir
from pacs_common.tls import TlsConfigError

from pacs_cli.deid_local import local_deid_env


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service and how to know it is ready."""

    name: str
    module: str
    grpc_port: int
    extra_ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


# The gateway queries the indexer for DICOM callers it admitted itself (by the site registry):
# the indexer recognises it by its mutual-TLS certificate and takes the tenant from the request.
# The DICOMweb service does the same for the HTTP callers whose bearer tokens it verified.
# Every other caller (the `pacs` CLI, applications) needs a bearer token.
_INDEXER_TRUSTS_GATEWAY = {"PACS_AUTH_TRUSTED_SERVICES": "gateway,dicomweb"}


@dataclass
class StackConfig:
    """Ports, run folder and environment of one local stack."""

    run_dir: Path
    storage_port: int = 50051
    indexer_port: int = 50052
    gateway_port: int = 50053
    dicom_port: int = 11112
    transcoder_port: int | None = None
    """The transcoder's port; None: no transcoder in this stack (the gateway then fails the
    retrieve sub-operations that would need one)."""
    audit_port: int = 50056
    hl7_port: int = 50058
    mllp_port: int = 2575
    # The de-identification service runs only in stacks that ask for it (``pacs up`` does), so
    # that the e2e and benchmark stacks on free ports never collide on its port.
    deid_port: int | None = None
    dicomweb_port: int = 8080
    dicomweb_grpc_port: int = 50057
    # The router runs only when the stack's run folder has a rules file (routes.yaml,
    # docs/routing.md): `pacs up` starts it once the operator wrote one.
    router_port: int = 50059
    env: dict[str, str] = field(default_factory=dict)

    def services(self) -> list[ServiceSpec]:
        """The services in start order (each depends only on the ones before it)."""
        transcoder = (
            [ServiceSpec("transcoder", "pacs_transcoder", self.transcoder_port)]
            if self.transcoder_port is not None
            else []
        )
        specs = [
            ServiceSpec("storage", "pacs_storage", self.storage_port),
            ServiceSpec("indexer", "pacs_indexer", self.indexer_port, env=_INDEXER_TRUSTS_GATEWAY),
            *transcoder,
            ServiceSpec("gateway", "pacs_gateway", self.gateway_port, {"dicom": self.dicom_port}),
            ServiceSpec("audit", "pacs_audit", self.audit_port),
            ServiceSpec("hl7", "pacs_hl7", self.hl7_port, {"mllp": self.mllp_port}),
            # gRPC for health only (its API is HTTP): ready when both answer.
            ServiceSpec(
                "dicomweb", "pacs_dicomweb", self.dicomweb_grpc_port, {"http": self.dicomweb_port}
            ),
        ]
        if self.deid_port is not None:
            deid_env = {**local_deid_env(self.run_dir), "PACS_DEID_GRPC_PORT": str(self.deid_port)}
            specs.append(ServiceSpec("deid", "pacs_deid", self.deid_port, env=deid_env))
        routes = self.run_dir / "routes.yaml"
        if routes.exists():
            router_env = {
                "PACS_ROUTER_GRPC_PORT": str(self.router_port),
                "PACS_ROUTER_RULES_FILE": str(routes),
                "PACS_ROUTER_STORAGE_TARGET": f"127.0.0.1:{self.storage_port}",
            }
            specs.append(ServiceSpec("router", "pacs_router", self.router_port, env=router_env))
        return specs

    def service_env(self) -> dict[str, str]:
        """Environment shared by every service process of this stack."""
        env = dict(os.environ)
        env.update(load_infra_env())
        env.update(
            {
                "PACS_STORAGE_GRPC_PORT": str(self.storage_port),
                "PACS_INDEXER_GRPC_PORT": str(self.indexer_port),
                "PACS_GATEWAY_GRPC_PORT": str(self.gateway_port),
                "PACS_GATEWAY_DICOM_PORT": str(self.dicom_port),
                "PACS_INDEXER_STORAGE_TARGET": f"127.0.0.1:{self.storage_port}",
                "PACS_GATEWAY_STORAGE_TARGET": f"127.0.0.1:{self.storage_port}",
                "PACS_GATEWAY_INDEXER_TARGET": f"127.0.0.1:{self.indexer_port}",
                "PACS_DICOMWEB_HTTP_PORT": str(self.dicomweb_port),
                "PACS_DICOMWEB_GRPC_PORT": str(self.dicomweb_grpc_port),
                "PACS_DICOMWEB_STORAGE_TARGET": f"127.0.0.1:{self.storage_port}",
                "PACS_DICOMWEB_INDEXER_TARGET": f"127.0.0.1:{self.indexer_port}",
                "PACS_INDEXER_DATABASE_URL": f"sqlite:///{self.run_dir / 'index.sqlite'}",
                "PACS_TRANSCODER_GRPC_PORT": str(self.transcoder_port or 0),
                "PACS_TRANSCODER_STORAGE_TARGET": f"127.0.0.1:{self.storage_port}",
                "PACS_GATEWAY_TRANSCODER_TARGET": (
                    f"127.0.0.1:{self.transcoder_port}" if self.transcoder_port else ""
                ),
                "PACS_HL7_GRPC_PORT": str(self.hl7_port),
                "PACS_HL7_MLLP_PORT": str(self.mllp_port),
                "PACS_DEID_STORAGE_TARGET": f"127.0.0.1:{self.storage_port}",
                "PACS_TLS_DIR": str(tls_dir()),
                "PACS_AUDIT_GRPC_PORT": str(self.audit_port),
                "PACS_AUDIT_DATABASE_URL": f"sqlite:///{self.run_dir / 'audit.sqlite'}",
                "PACS_AUDIT_SIGNING_KEY_FILE": str(self.run_dir / "audit-signing.pem"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.env)
        return env


def grpc_serving(port: int, timeout_s: float = 1.0) -> bool:
    """True if the gRPC health service on ``port`` answers SERVING (over mutual TLS; without
    the local certificates nothing can answer, so False)."""
    try:
        channel = sync_channel(f"127.0.0.1:{port}")
    except TlsConfigError:
        return False
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def port_open(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ServiceProcess:
    """One service process with its pid file and log file."""

    def __init__(self, spec: ServiceSpec, run_dir: Path) -> None:
        self.spec = spec
        self.pid_file = run_dir / f"{spec.name}.pid"
        self.log_file = run_dir / f"{spec.name}.log"
        self._child: subprocess.Popen[bytes] | None = None

    def pid(self) -> int | None:
        """The pid of the running process, or None."""
        if self._child is not None and self._child.poll() is not None:
            # Our own child exited: poll() reaped it (a zombie would still answer kill(pid, 0)).
            return None
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None
        return pid

    def start(self, env: dict[str, str]) -> None:
        """Start the process unless it already runs."""
        if self.pid() is not None:
            return
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603  (our own interpreter and module)
                [sys.executable, "-m", self.spec.module],
                env={**env, **self.spec.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO,
            )
        self._child = process
        self.pid_file.write_text(str(process.pid))

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until every port of the service answers.

        Raises:
            RuntimeError: the process died or did not become ready; the message shows its log.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise RuntimeError(f"{self.spec.name} exited during start-up:\n{self.log_tail()}")
            ready = grpc_serving(self.spec.grpc_port) and all(
                port_open(port) for port in self.spec.extra_ports.values()
            )
            if ready:
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"{self.spec.name} not ready after {timeout_s:.0f}s; log {self.log_file}:\n"
            f"{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 15.0) -> bool:
        """SIGTERM (graceful shutdown), then SIGKILL after ``timeout_s``; True if it ran."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.1)
        if self.pid() is not None:
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the service's log."""
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


class Stack:
    """The services of one local stack, started in dependency order."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.processes = [ServiceProcess(s, config.run_dir) for s in config.services()]

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every service and wait until each is ready; stops all on failure."""
        ensure_local_pki()
        env = self.config.service_env()
        try:
            for process in self.processes:
                process.start(env)
                process.wait_ready(timeout_s)
        except Exception:
            self.stop()
            raise

    def stop(self) -> list[str]:
        """Stop the services in reverse order; returns the names of those that ran."""
        return [p.spec.name for p in reversed(self.processes) if p.stop()]

    def process(self, name: str) -> ServiceProcess:
        """The process of one service by name."""
        return next(p for p in self.processes if p.spec.name == name)
