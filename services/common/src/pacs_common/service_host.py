"""The one service host: every cloudpacs gRPC server runs on it.

A service's ``app.py`` keeps only its wiring (its servicers, its own resources, its stop hooks);
the host owns the rest, the same way in every service:

- the gRPC server with tracing, peer authorization (:mod:`pacs_common.peers`), the error-mapping
  interceptor, metrics, and the service's extra interceptors (for example bearer-token auth);
- health (``grpc.health.v1``: SERVING after :meth:`ServiceHost.start`, NOT_SERVING as the stop
  begins) and reflection;
- mutual TLS (:mod:`pacs_common.tls`): the port is bound in :meth:`ServiceHost.start`, never in a
  constructor, with the service's certificate, and a missing file stops the start naming it;
- the Prometheus ``/metrics`` endpoint when ``metrics_port`` is set;
- SIGTERM/SIGINT, and an ordered stop with **one deadline** (``shutdown_grace_s``) shared by all
  steps: stop accepting calls and drain those in flight (``server.stop(grace)``), then the stop
  hooks stage by stage (consumers, then producers, then resources), each bounded by what remains
  of the deadline. A consumer therefore stops (committing what it handled) before the producer
  it publishes through is flushed, and nothing waits past the deadline Kubernetes gives a pod.

Logging and tracing are configured once per process from the service name by
:func:`configure_process` (``serve()`` calls it; tests keep pytest's logging).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from pacs_common import audit_events
from pacs_common.grpc_server import build_server
from pacs_common.logging import configure_logging
from pacs_common.metrics import GrpcMetricsInterceptor, MetricsServer, start_metrics_server
from pacs_common.peers import PeerAuthorizationInterceptor
from pacs_common.settings import KafkaSettings, ServiceSettings
from pacs_common.telemetry import configure_tracing

log = logging.getLogger(__name__)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StopStage(enum.IntEnum):
    """When a stop hook runs, after the server drained its calls; lower stages first."""

    CONSUMERS = 1
    """Stop taking new work from outside (Kafka consumers, background loops); commit."""
    PRODUCERS = 2
    """Flush what was produced (Kafka producers): the consumers can no longer add to it."""
    RESOURCES = 3
    """Close channels, pools and files."""


@dataclass(frozen=True)
class _Hook:
    name: str
    stage: StopStage
    stop: Callable[[], Awaitable[None]]


def configure_process(settings: ServiceSettings) -> None:
    """JSON logging and tracing named after the service, once per process."""
    configure_logging(settings.service_name, settings.log_level, settings.log_patient_data)
    configure_tracing(settings.service_name)


class ServiceHost:
    """One service's gRPC server and lifecycle.

    Usage (in a service's ``app.py``)::

        host = ServiceHost(settings, [SERVICE_NAME], register)
        host.on_stop("consumer", consumer.stop, StopStage.CONSUMERS)
        host.on_stop("publisher", publisher.stop, StopStage.PRODUCERS)
        await host.start()            # binds settings.grpc_port with mutual TLS; host.port
        await host.run_until_signalled()
    """

    def __init__(
        self,
        settings: ServiceSettings,
        service_names: Sequence[str],
        register: Callable[[grpc.aio.Server], None],
        *,
        interceptors: Iterable[Any] = (),
        allowed_peers: Iterable[str] | None = None,
    ) -> None:
        """Build (not bind, not start) the server.

        Args:
            settings: the service's settings: name, host, port, TLS, metrics port, grace.
            service_names: full names of the gRPC services ``register`` adds (health, reflection).
            register: adds the service's servicers to the server.
            interceptors: extra server interceptors, run innermost (after error mapping).
            allowed_peers: identities allowed to call; default ``settings.allowed_peers``.
        """
        self.settings = settings
        self.service_names = list(service_names)
        self.tls = settings.grpc_tls
        allowed = settings.allowed_peers if allowed_peers is None else allowed_peers
        # Without TLS there is no identity to check: plaintext is for debugging only.
        authorization = [PeerAuthorizationInterceptor(allowed)] if self.tls.enabled else []
        configure_tracing(settings.service_name)
        self.server, self.health = build_server(
            register,
            self.service_names,
            interceptors=[GrpcMetricsInterceptor(), *interceptors],
            authorization=authorization,
        )
        self.port = 0
        self.metrics: MetricsServer | None = None
        self._hooks: list[_Hook] = []
        self._started = False
        self._stopping: asyncio.Future[None] | None = None

    def on_stop(self, name: str, stop: Callable[[], Awaitable[None]], stage: StopStage) -> None:
        """Run ``stop`` during :meth:`stop`, in ``stage`` (in registration order within it)."""
        self._hooks.append(_Hook(name, stage, stop))

    async def start_audit(
        self, kafka: KafkaSettings, settings: audit_events.AuditSettings | None = None
    ) -> None:
        """Start this process's audit emitter (:mod:`pacs_common.audit_events`), flushed in
        the PRODUCERS stage of the stop; call before :meth:`start`."""
        emitter = await audit_events.start_emitter(kafka, self.settings.service_name, settings)
        if emitter is not None:
            self.on_stop("audit", emitter.stop, StopStage.PRODUCERS)

    def _bind(self) -> int:
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        if self.tls.enabled:
            bound = self.server.add_secure_port(address, self.tls.server_credentials())
        else:
            log.warning(
                "mutual TLS is OFF (PACS_TLS_ENABLED=false): gRPC is plaintext and every caller "
                "is accepted; never run like this outside a debugging session",
                extra={"address": address},
            )
            bound = self.server.add_insecure_port(address)
        if bound == 0:
            raise SystemExit(f"cannot bind gRPC port {address}; is it already in use?")
        return bound

    async def start(self) -> None:
        """Bind the port (mutual TLS), serve, start /metrics, and report SERVING.

        Raises:
            SystemExit: the certificate files are missing (the message names the file and
                what to run) or the port cannot be bound.
        """
        self.port = self._bind()
        await self.server.start()
        self._started = True
        if self.settings.metrics_port is not None:
            self.metrics = start_metrics_server(self.settings.metrics_port, self.settings.grpc_host)
        for name in ("", *self.service_names):
            await self.health.set(name, _SERVING)
        audit_events.emit(audit_events.application_activity(self.settings.service_name, True))

    async def set_serving(self, service_name: str, serving: bool) -> None:
        """Report one service SERVING or NOT_SERVING (for example while a dependency is down);
        ignored once the stop began."""
        if self._stopping is None:
            await self.health.set(service_name, _SERVING if serving else _NOT_SERVING)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` began."""
        return self._stopping is not None

    async def stop(self, deadline: float | None = None) -> None:
        """Stop in order within one deadline; safe to call twice (the second call waits).

        Args:
            deadline: ``time.monotonic()`` by which everything must be done; default now plus
                ``shutdown_grace_s``. A caller that stops other things first (the gateway's
                DICOM listener) passes the deadline it started from.
        """
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
            return
        self._stopping = asyncio.get_running_loop().create_future()
        if deadline is None:
            deadline = time.monotonic() + self.settings.shutdown_grace_s
        try:
            await self._stop(deadline)
        finally:
            self._stopping.set_result(None)

    async def _stop(self, deadline: float) -> None:
        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        for name in ("", *self.service_names):
            await self.health.set(name, _NOT_SERVING)
        if self._started:
            audit_events.emit(audit_events.application_activity(self.settings.service_name, False))
            # New calls are refused at once; calls in flight get what remains of the deadline.
            await self.server.stop(remaining())
        for hook in sorted(self._hooks, key=lambda h: h.stage):
            try:
                await asyncio.wait_for(hook.stop(), timeout=remaining())
            except TimeoutError:
                log.warning("stop deadline passed", extra={"step": hook.name})
            except Exception:
                log.exception("stop step failed", extra={"step": hook.name})
        if self.metrics is not None:
            self.metrics.stop()
        overrun = max(0.0, time.monotonic() - deadline)
        log.info("stopped", extra={"past_deadline_s": round(overrun, 3)})

    async def run_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then :meth:`stop`."""
        loop = asyncio.get_running_loop()
        signalled = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        try:
            await signalled.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("shutting down", extra={"grace_s": self.settings.shutdown_grace_s})
        await self.stop()
