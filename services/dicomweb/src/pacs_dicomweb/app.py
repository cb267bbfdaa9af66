"""The DICOMweb process: a Starlette application on uvicorn, over the indexer and storage.

It has no gRPC API of its own: it is an HTTP facade (see ``DESIGN.md``) whose only state is
its channels to QueryService and StorageService. It still runs the one service host
(:class:`~pacs_common.service_host.ServiceHost`) with no servicer, for what every
component has: gRPC health over mutual TLS (the chart's probes, ``pacs up``) and the
``/metrics`` port. Start with :func:`create_app` then
``await app.start()`` (binds the HTTP port; 0 picks a free one in tests) and ``await
app.stop()``; :func:`serve` runs it until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from pacs_common.errors import PacsError
from pacs_common.service_host import ServiceHost, configure_process
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount

from pacs_dicomweb.backend import Backend
from pacs_dicomweb.http_errors import pacs_error_response
from pacs_dicomweb.retrieve import InstanceCache
from pacs_dicomweb.routes import Context, routes
from pacs_dicomweb.security import Authenticator
from pacs_dicomweb.settings import DicomwebSettings

log = logging.getLogger(__name__)


def build_asgi(settings: DicomwebSettings, backend: Backend, auth: Authenticator) -> Starlette:
    """The ASGI application: the resources under the base path, CORS, errors, /metrics."""
    cache = InstanceCache(settings.instance_cache_bytes) if settings.instance_cache_bytes else None
    context = Context(settings, backend, auth, cache)
    middleware = []
    if settings.cors_origins:
        # microsoft/dicom-server#2021: the preflight must allow Accept, not only Authorization.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Accept", "Authorization", "Content-Type", "Range"],
                expose_headers=["Content-Type", "Content-Range", "Warning", "X-Total-Count"],
                max_age=600,
            )
        )
    base = settings.base_path.rstrip("/")
    return Starlette(
        # /metrics is on the host's own port, never behind the public ingress.
        routes=[Mount(base, routes=routes(context))],
        middleware=middleware,
        exception_handlers={PacsError: pacs_error_response},
    )


class _Server(uvicorn.Server):
    """uvicorn's server, handling SIGTERM/SIGINT (the process's own server)."""


class _QuietServer(uvicorn.Server):
    """uvicorn's server leaving signals alone (in-process tests, embedding)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class DicomwebApp:
    """One running DICOMweb service."""

    def __init__(self, settings: DicomwebSettings) -> None:
        self.settings = settings
        self.backend: Backend | None = None
        self.server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0
        self.host = ServiceHost(settings, [], lambda server: None)

    @property
    def grpc_port(self) -> int:
        """The bound gRPC (health) port."""
        return self.host.port

    @property
    def url(self) -> str:
        """The DICOMweb root URL (after :meth:`start`)."""
        return f"http://{self.settings.http_host}:{self.port}{self.settings.base_path}"

    async def start(self, *, install_signal_handlers: bool = False) -> None:
        """Open the channels and bind the HTTP port."""
        self.backend = Backend(self.settings)
        auth = Authenticator(
            self.settings.auth,
            loopback_default_tenant=self.settings.loopback_default_tenant,
            default_tenant=self.settings.default_tenant,
        )
        config = uvicorn.Config(
            build_asgi(self.settings, self.backend, auth),
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(self.settings.shutdown_grace_s) or None,
        )
        self.server = (_Server if install_signal_handlers else _QuietServer)(config)
        self._task = asyncio.create_task(self.server.serve(), name="uvicorn")
        while not self.server.started:
            if self._task.done():
                await self._task
                raise SystemExit(f"cannot serve HTTP on port {self.settings.http_port}")
            await asyncio.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        await self.host.start()  # health SERVING once HTTP accepts
        log.info("dicomweb started", extra={"http_port": self.port})

    async def wait(self) -> None:
        """Until the server stops (SIGTERM with signal handlers installed)."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        """Stop serving (requests in flight get the grace period), close the channels."""
        await self.host.stop()  # health NOT_SERVING first, so probes take the pod out
        if self.server is not None:
            self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.backend is not None:
            await self.backend.close()
            self.backend = None


def create_app(settings: DicomwebSettings) -> DicomwebApp:
    """Build a DICOMweb service from its settings (nothing is started yet)."""
    return DicomwebApp(settings)


async def serve() -> None:
    """Run the DICOMweb service with settings from the environment until SIGTERM."""
    settings = DicomwebSettings.load()
    configure_process(settings)
    app = create_app(settings)
    await app.start(install_signal_handlers=True)
    try:
        await app.wait()
    finally:
        await app.stop()
