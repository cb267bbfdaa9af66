"""Helpers of the router's tests: sample instances, DCMTK ``storescp`` as a remote facility,
and waiting without fixed sleeps."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import pydicom
from pacs_common.local import free_port  # re-exported: one port never handed out twice
from pacs_router.app import RouterApp
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
T = TypeVar("T")
RouterFactory = Callable[..., Awaitable[RouterApp]]
"""Starts a router with a rules dict (the ``start_router`` fixture)."""
DCMTK_STORESCP = "/usr/bin/storescp"
"""DCMTK's, by path: the virtual environment has a Python storescp of its own on PATH."""


def sample(
    name: str = "CT_small.dcm",
    *,
    study_uid: str | None = None,
    sop_class_uid: str | None = None,
    **attributes: Any,
) -> bytes:
    """A pydicom test file with fresh Study/Series/SOP Instance UIDs (tests never share
    instances), optionally in a given study, with other attributes changed."""
    dataset = pydicom.dcmread(TEST_FILES / name)
    dataset.StudyInstanceUID = study_uid or generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if sop_class_uid:
        dataset.SOPClassUID = sop_class_uid
        dataset.file_meta.MediaStorageSOPClassUID = sop_class_uid
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    out = BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dataset_of(part10: bytes | Path) -> Dataset:
    """The parsed object."""
    return pydicom.dcmread(BytesIO(part10) if isinstance(part10, bytes) else part10)


def data_set_bytes(part10: bytes) -> bytes:
    """The encoded data set after the file meta information (PS3.10 7.1)."""
    stream = BytesIO(part10)
    pydicom.filereader.read_preamble(stream, False)
    pydicom.filereader._read_file_meta_info(stream)
    return part10[stream.tell() :]


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 120, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something (generous: the machine is shared)."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'a condition'}")
        await asyncio.sleep(0.2)


class StoreScp:
    """DCMTK ``storescp`` on a loopback port, writing each received object bit-preserved
    (``+B``) into its own folder; ``start()`` may come later than the test's sends."""

    def __init__(
        self,
        ae_title: str = "REMOTE",
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """``tls``: (key, certificate) PEM files: DICOM over TLS only (DCMTK ``+tls``), client
        certificates not asked for (``-ic``)."""
        self.ae_title = ae_title
        self.tls = tls
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="storescp-"))
        self.order_file = self.folder.parent / f"{self.folder.name}.order"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreScp:
        """Start listening (returns once the port accepts connections)."""
        log = (self.folder.parent / f"{self.folder.name}.log").open("wb")
        self.process = subprocess.Popen(
            [
                DCMTK_STORESCP,
                "+xa",
                "+B",
                "-aet",
                self.ae_title,
                "-od",
                str(self.folder),
                # One line per received object, written before the next association is
                # served (synchronous, one process): the order of arrival.
                "-xcr",
                f"echo #f >> {self.order_file}",
                "-xs",
                *(["+tls", str(self.tls[0]), str(self.tls[1]), "-ic"] if self.tls else []),
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("storescp did not start") from None
                time.sleep(0.1)

    def received(self) -> list[Path]:
        """The files received so far, in the order they arrived."""
        if not self.order_file.exists():
            return []
        names = self.order_file.read_text().split()
        return [self.folder / name for name in names if (self.folder / name).is_file()]

    def stop(self) -> None:
        """Stop it and remove its folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        for path in (self.order_file, self.folder.parent / f"{self.folder.name}.log"):
            path.unlink(missing_ok=True)


def dimse(peer: StoreScp) -> dict[str, Any]:
    """The rules-file entry of a storescp destination."""
    return {"kind": "dimse", "host": "127.0.0.1", "port": peer.port, "ae_title": peer.ae_title}
