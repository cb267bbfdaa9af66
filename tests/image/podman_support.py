"""Running the cloudpacs images with podman beside the local infrastructure.

The images are the ones ``make image`` (``infra/image.sh``) builds. Each container gets what a
Kubernetes pod gets from the chart: its settings as ``PACS_*`` environment variables (the same
values ``pacs_cli.stack`` hands a service process), its own certificate and the CA mounted
read-only, a read-only root file system with a writable ``/tmp``, no capabilities. The host's
network namespace (``--network host``) lets it reach Kafka, S3, PostgreSQL and hydra on
127.0.0.1 exactly as a local process does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from pacs_cli.stack import StackConfig, grpc_serving, port_open
from pacs_common.local import REPO, tls_dir

IMAGE_TAG = os.environ.get("PACS_IMAGE_TAG", "dev")
SERVICES = ("storage", "indexer", "gateway")
CONTAINERS_CONF = REPO / "infra" / "containers.conf"
TLS_MOUNT = "/etc/cloudpacs/tls"
SERVICE_UID = 10001
"""The Dockerfile's service user: the files it must read are handed to it (as Kubernetes
does with a Secret volume and fsGroup); the mounted copy is read-only."""


def image_name(service: str) -> str:
    """The local tag ``infra/image.sh`` gives a service's image."""
    return f"localhost/cloudpacs/{service}:{IMAGE_TAG}"


def podman_env() -> dict[str, str]:
    """The environment of every podman call: runc and ulimits this machine allows."""
    return {"CONTAINERS_CONF": str(CONTAINERS_CONF), **os.environ}


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run ``podman args``; its stdout. Raises with podman's stderr when ``check`` fails."""
    result = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def missing_images() -> list[str]:
    """The images of SERVICES not built yet (all of them when podman is not installed)."""
    if shutil.which("podman") is None:
        return [image_name(s) for s in SERVICES]
    return [
        image_name(s)
        for s in SERVICES
        if subprocess.run(
            ["podman", "image", "exists", image_name(s)],
            env=podman_env(),
            capture_output=True,
            timeout=60,
            check=False,
        ).returncode
        != 0
    ]


def container_tls_dir(destination: Path, services: tuple[str, ...]) -> Path:
    """A copy of the CA certificate and of the services' own certificates and keys, owned by
    the image's user. Never the CA's key: a container needs to prove who it is, not to issue."""
    source = tls_dir()
    destination.mkdir(mode=0o700)
    names = ["ca.crt"] + [f"{s}.{ext}" for s in services for ext in ("crt", "key")]
    for name in names:
        target = destination / name
        shutil.copyfile(source / name, target)
        target.chmod(0o400)
        os.chown(target, SERVICE_UID, SERVICE_UID)
    destination.chmod(0o500)
    os.chown(destination, SERVICE_UID, SERVICE_UID)
    return destination


@dataclass
class Container:
    """One running service container."""

    service: str
    name: str
    grpc_port: int
    extra_ports: tuple[int, ...] = ()

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.strip() == "true"

    def logs(self, lines: int = 40) -> str:
        return podman("logs", "--tail", str(lines), self.name, check=False)

    def wait_ready(self, timeout_s: float) -> None:
        """Until the gRPC health check says SERVING (over mutual TLS, as the CLI) and every
        extra port accepts connections. Raises with the container's log if it exits or times
        out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.logs()}")
            if grpc_serving(self.grpc_port) and all(port_open(p) for p in self.extra_ports):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f}s:\n{self.logs()}")


_NOT_FOR_SERVICES = ("PACS_CLI_", "PACS_APP_", "PACS_TEST_", "PACS_HYDRA_", "PACS_IMAGE_")
"""What infra.env holds for clients and tests (OAuth client secrets, hydra's admin URL): a
service process inherits them from ``pacs up``'s environment, a container needs none."""


def container_env(config: StackConfig, service: str) -> dict[str, str]:
    """What ``pacs_cli.stack`` gives the service's process, restricted to the services'
    ``PACS_*`` settings (the host's PATH, HOME… are not the container's; the clients' secrets
    are not its business), with the certificate directory as it is mounted in the container."""
    env = {
        k: v
        for k, v in config.service_env().items()
        if k.startswith("PACS_") and not k.startswith(_NOT_FOR_SERVICES)
    }
    spec = next(s for s in config.services() if s.name == service)
    env.update(spec.env)
    env["PACS_TLS_DIR"] = TLS_MOUNT
    return env


@contextmanager
def run_container(
    config: StackConfig, service: str, work_dir: Path, tls: Path, label: str
) -> Iterator[Container]:
    """``podman run`` one service image, wait until it is ready, remove it on exit."""
    spec = next(s for s in config.services() if s.name == service)
    env_file = work_dir / f"{service}.env"
    # An env file (mode 600) rather than -e flags: the Kafka and S3 secrets stay off the
    # command line that every user of the machine can read in ps.
    env_file.touch(mode=0o600)
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in sorted(container_env(config, service).items()))
    )
    name = f"cloudpacs-test-{service}-{label}"
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,size=256m",  # the container's own /tmp, as the chart's emptyDir
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--volume",
        f"{tls}:{TLS_MOUNT}:ro",
        "--env-file",
        str(env_file),
        image_name(service),
    )
    container = Container(service, name, spec.grpc_port, tuple(spec.extra_ports.values()))
    try:
        container.wait_ready(timeout_s=120)
        yield container
    finally:
        podman("stop", "--time", "15", name, check=False, timeout=60)
        podman("rm", "--force", name, check=False, timeout=60)


@contextmanager
def running_containers(
    config: StackConfig, work_dir: Path, label: str
) -> Iterator[dict[str, Container]]:
    """Storage, indexer and gateway containers, started in dependency order."""
    tls = container_tls_dir(work_dir / "tls", SERVICES)
    with ExitStack() as stack:
        containers = {
            service: stack.enter_context(run_container(config, service, work_dir, tls, label))
            for service in SERVICES
        }
        yield containers
