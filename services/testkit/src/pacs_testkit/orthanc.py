"""Orthanc with its DICOMweb plugin (Debian ``orthanc`` + ``orthanc-dicomweb``) on free
loopback ports: the differential peer of the DICOMweb tests and benchmark.

It runs with defaults plus the plugin (``StudiesMetadata``/``SeriesMetadata`` ``Full``, so its
metadata is read from the stored files, the plugin's most faithful mode), a fresh storage
folder, and no remote access. Instances are loaded through its REST API (``POST /instances``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OrthancDicomweb:
    """``with OrthancDicomweb() as orthanc: orthanc.dicomweb_url ...``"""

    def __init__(
        self, metadata_mode: str = "Full", extra_config: dict[str, Any] | None = None
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="orthanc-dicomweb-"))
        self.http_port = _free_port()
        self.dicom_port = _free_port()
        self.metadata_mode = metadata_mode
        # More of Orthanc's configuration (for example DicomModalities for C-FIND/C-MOVE peers).
        self.extra_config = extra_config or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The REST API root."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root."""
        return f"{self.url}/dicom-web"

    def __enter__(self) -> OrthancDicomweb:
        if not Path(DICOMWEB_PLUGIN).exists():
            raise FileNotFoundError(
                f"{DICOMWEB_PLUGIN} missing: run infra/bootstrap.sh (apt orthanc-dicomweb)"
            )
        config = {
            "Name": "peer",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "StudiesMetadata": self.metadata_mode,
                "SeriesMetadata": self.metadata_mode,
            },
        }
        config.update(self.extra_config)
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        with (self.folder / "orthanc.log").open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603  (the installed Orthanc)
                [ORTHANC, str(self.folder / "orthanc.json")],
                env=dict(os.environ, TCP_NODELAY="1"),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 180  # a loaded machine starts it slowly
        while True:
            try:
                self.get_json("/system")
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start; log in {self.folder}") from None
                time.sleep(0.2)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                # After the router's tests Orthanc took over 20 s to stop on SIGTERM (cause
                # not traced); a test's scratch peer holds nothing worth waiting for.
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def get_json(self, path: str) -> Any:
        """GET a REST resource as JSON."""
        with urllib.request.urlopen(self.url + path, timeout=30) as reply:
            return json.loads(reply.read())

    def upload(self, part10: bytes) -> None:
        """Store one instance through the REST API."""
        request = urllib.request.Request(
            self.url + "/instances",
            data=part10,
            method="POST",
            headers={"Content-Type": "application/dicom"},
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            reply.read()
