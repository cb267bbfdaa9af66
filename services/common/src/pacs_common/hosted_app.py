"""What every service's app shares around its :class:`~pacs_common.service_host.ServiceHost`.

A service's ``app.py`` subclasses :class:`HostedApp`, builds its host and resources in
``__init__`` (nothing bound), and puts its own start-up steps in ``_start``; the bound port,
the ``/metrics`` endpoint, undoing a half-done start, and the one-deadline stop come from here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from pacs_common.metrics import MetricsServer
from pacs_common.service_host import ServiceHost


class HostedApp(ABC):
    """A service process's wiring around its host: create, ``start()``, ``stop()``."""

    host: ServiceHost

    @property
    def grpc_port(self) -> int:
        """The bound gRPC port (0 before :meth:`start`)."""
        return self.host.port

    @property
    def metrics(self) -> MetricsServer | None:
        """The /metrics endpoint (with ``metrics_port`` set, after :meth:`start`)."""
        return self.host.metrics

    async def start(self) -> None:
        """Run the service's start-up steps, then serve.

        If a step fails (a missing certificate, a port in use, an unreachable database), what
        was started is stopped again before the error propagates.
        """
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    @abstractmethod
    async def _start(self) -> None:
        """The service's own start-up steps, ending with ``await self.host.start()``."""

    async def stop(self) -> None:
        """Stop accepting and drain, then run the host's stop hooks in order (consumers,
        producers, resources) within one deadline; safe to call twice."""
        await self.host.stop()
