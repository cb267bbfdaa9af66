"""OHIF v3 (the prebuilt viewer of the npm package ``@ohif/app``, fetched by
``infra/ohif.sh``) served statically, and Debian's headless Chromium to drive it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from pacs_common.local import REPO, free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

# OHIF's stock DICOMweb data source (as its docs configure one for a DICOMweb server such as
# Orthanc or dcm4chee): QIDO with includefield, WADO-RS images, lazy study loading.
APP_CONFIG = """
window.config = {
  routerBasename: null,
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  defaultDataSourceName: 'cloudpacs',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'cloudpacs',
      configuration: {
        friendlyName: 'cloudpacs',
        name: 'cloudpacs',
        wadoUriRoot: '%(root)s',
        qidoRoot: '%(root)s',
        wadoRoot: '%(root)s',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
"""


def ohif_dist() -> Path:
    """The unpacked viewer (``infra/ohif.sh`` fetches it once into ``.cache``)."""
    result = subprocess.run(
        [str(REPO / "infra" / "ohif.sh")], capture_output=True, text=True, check=True, timeout=600
    )
    return Path(result.stdout.strip().splitlines()[-1])


def _viewer_app(dist: Path, dicomweb_root: str) -> Starlette:
    config = APP_CONFIG % {"root": dicomweb_root}
    dist = dist.resolve()  # .cache may be a symbolic link

    async def serve(request: Request) -> Response:
        path = request.path_params.get("path", "")
        if path == "app-config.js":
            return PlainTextResponse(config, media_type="application/javascript")
        candidate = (dist / path).resolve()
        if path and candidate.is_file() and dist in candidate.parents:
            return FileResponse(candidate)
        return FileResponse(dist / "index.html")  # the app routes /viewer etc. itself

    return Starlette(routes=[Route("/", serve), Route("/{path:path}", serve)])


@contextmanager
def ohif_server(dicomweb_root: str, port: int = 0) -> Iterator[str]:
    """Serve OHIF on a loopback port (free unless given; a thread of its own); yields its
    origin."""
    port = port or free_port()
    config = uvicorn.Config(
        _viewer_app(ohif_dist(), dicomweb_root), host="127.0.0.1", port=port, log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            threading.Event().wait(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def chromium(url: str, *, screenshot: Path | None = None, budget_ms: int = 40000) -> str:
    """Load ``url`` in headless Chromium for ``budget_ms`` of virtual time; the final DOM
    (or the screenshot written to ``screenshot``)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise FileNotFoundError("Debian's chromium is missing: run infra/bootstrap.sh")
    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        f"--virtual-time-budget={budget_ms}",
    ]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    result = subprocess.run([*args, url], capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed: {result.stderr[-2000:]}")
    return result.stdout
