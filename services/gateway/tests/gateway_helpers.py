"""Helpers of the gateway tests: DCMTK runs, pynetdicom SCU calls, free/closed ports."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pacs_common.local import free_port
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.codes import STUDY_ROOT_FIND
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, build_context

# Distinct SOP instances covering the transfer syntaxes a modality sends.
SAMPLE_FILES = [
    "CT_small.dcm",  # Explicit VR Little Endian
    "rtplan.dcm",  # Implicit VR Little Endian
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPEG2000.dcm",  # JPEG 2000 (lossy)
    "emri_small_jpeg_2k_lossless.dcm",  # JPEG 2000 lossless
    "JPEG-LL.dcm",  # JPEG lossless SV1
    "JPEG-lossy.dcm",  # JPEG extended
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "SC_rgb_rle.dcm",  # RLE lossless
]


def sample_path(name: str) -> Path:
    """Path of one of pydicom's bundled test files."""
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(str(path))


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused), never handed out before
    by this process (:func:`pacs_common.local.free_port`)."""
    return free_port()


def dcmtk(tool: str) -> str:
    """Absolute path of a DCMTK tool (the venv has pynetdicom apps with the same names)."""
    path = shutil.which(tool, path="/usr/bin:/usr/local/bin")
    assert path is not None, f"DCMTK {tool} is not installed"
    return path


async def run_dcmtk(tool: str, *args: str | Path, deadline_s: float = 60) -> tuple[int, str]:
    """Run a DCMTK tool with TCP_NODELAY=1; returns (exit code, stdout+stderr)."""
    proc = await asyncio.create_subprocess_exec(
        dcmtk(tool),
        *[str(a) for a in args],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), deadline_s)
    return int(proc.returncode or 0), out.decode(errors="replace")


def scu_store_files(
    port: int, paths: list[Path], calling: str = "TESTSCU", called: str = "CLOUDPACS"
) -> list[int]:
    """Send files with pynetdicom, each in its own syntax, bytes unchanged; their statuses."""
    ae = AE(ae_title=calling)
    headers = [dcmread(p, stop_before_pixels=True) for p in paths]
    for header in headers:
        ae.add_requested_context(header.SOPClassUID, header.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "association not established"
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's dataset bytes as they are
    try:
        statuses = [int(assoc.send_c_store(path).Status) for path in paths]
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        assoc.release()
    return statuses


def scu_store_dataset(
    port: int, dataset: Dataset, transfer_syntax: str, calling: str = "TESTSCU"
) -> Dataset:
    """Send one dataset with pynetdicom; the C-STORE response status dataset."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(dataset.SOPClassUID, transfer_syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDPACS")
    assert assoc.is_established, "association not established"
    try:
        response: Dataset = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    return response


def scu_find(
    port: int,
    identifier: Dataset,
    model: str,
    calling: str = "TESTSCU",
    source: str = "127.0.0.1",
) -> list[tuple[int, Dataset | None]]:
    """C-FIND with pynetdicom from ``source``; every (status, identifier) response."""
    with scu_association(port, model, calling, source=source) as assoc:
        return [
            (int(status.Status), ident)
            for status, ident in assoc.send_c_find(identifier, model)
            if status is not None and "Status" in status
        ]


def write_registry(path: Path, tenants: dict[str, dict[str, Any]]) -> Path:
    """Write a site registry: ``tenants`` maps each tenant to the entries (callers,
    destinations) of its one site, ``main``."""
    registry = {"tenants": {name: {"sites": {"main": site}} for name, site in tenants.items()}}
    path.write_text(yaml.safe_dump(registry))
    return path


def scu_associate(port: int, calling: str = "TESTSCU", called: str = "CLOUDPACS") -> object:
    """Try to open an association for Verification; returns the pynetdicom Association."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(build_context(codes.VERIFICATION).abstract_syntax)
    return ae.associate("127.0.0.1", port, ae_title=called)


@contextmanager
def scu_association(
    port: int,
    sop_class: str,
    calling: str,
    evt_handlers: list[Any] | None = None,
    source: str = "127.0.0.1",
) -> Iterator[Any]:
    """An established association to the gateway for ``sop_class`` from the loopback address
    ``source`` (any of 127.0.0.0/8, to play callers on different networks), released
    afterwards."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(sop_class)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="CLOUDPACS",
        evt_handlers=evt_handlers,
        bind_address=(source, 0),
    )
    assert assoc.is_established, "association not established"
    try:
        yield assoc
    finally:
        assoc.release()


async def eventually(
    check: Callable[[], Awaitable[bool]], within_s: float = 30, interval: float = 0.25
) -> bool:
    """Poll ``check`` until it returns True or ``within_s`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return await check()


class Storescp:
    """DCMTK storescp as a C-MOVE destination, in a subprocess (TCP_NODELAY=1)."""

    def __init__(self, directory: Path, ae_title: str = "DEST", accept_all: bool = False) -> None:
        self.directory = directory
        self.ae_title = ae_title
        self.accept_all = accept_all
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Storescp:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        args = [dcmtk("storescp"), "-aet", self.ae_title, "-od", str(self.directory), "+B"]
        if self.accept_all:
            args.append("+xa")
        self._proc = await asyncio.create_subprocess_exec(
            *args,
            str(self.port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        await wait_for_port(self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()

    def received(self) -> list[Dataset]:
        """Every dataset received so far."""
        return [dcmread(p) for p in sorted(self.directory.iterdir()) if p.is_file()]


async def wait_for_port(port: int, within_s: float = 10) -> None:
    """Wait until something listens on ``port`` (loopback)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


async def findscu(port: int, out_dir: Path, *args: str) -> tuple[str, list[Dataset]]:
    """Run DCMTK findscu against the gateway on ``port`` (called AE CLOUDPACS) with ``args``
    (model, keys, options), writing the responses into the new folder ``out_dir``; its output
    and the responses in the order received. The test fails if findscu fails."""
    await asyncio.to_thread(out_dir.mkdir, parents=True)
    code, out = await run_dcmtk(
        "findscu", "-aec", "CLOUDPACS", *args, "-X", "-od", out_dir, "127.0.0.1", str(port)
    )
    assert code == 0, out
    return out, await asyncio.to_thread(_responses_in, out_dir)


def _responses_in(out_dir: Path) -> list[Dataset]:
    """The response identifiers DCMTK wrote into ``out_dir`` (rsp0001.dcm, ...), in order."""
    return [dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))]


async def stored_and_indexed(
    port: int, paths: list[Path], calling: str = "MODALITY", within_s: float = 90
) -> set[str]:
    """C-STORE ``paths`` to the gateway on ``port`` as ``calling`` (pynetdicom), then wait as
    :func:`wait_indexed`; their SOP Instance UIDs."""
    statuses = await asyncio.to_thread(scu_store_files, port, paths, calling)
    assert statuses == [codes.SUCCESS] * len(paths)
    return await wait_indexed(port, paths, calling, within_s)


async def wait_indexed(
    port: int, paths: list[Path], calling: str = "MODALITY", within_s: float = 90
) -> set[str]:
    """Wait until C-FIND as ``calling`` (Study Root, IMAGE level, per series of each study)
    finds every instance of ``paths`` through the gateway on ``port``; their SOP Instance
    UIDs."""
    headers = [dcmread(p, stop_before_pixels=True) for p in paths]
    wanted = {str(h.SOPInstanceUID) for h in headers}

    async def matches(identifier: Dataset, keyword: str) -> set[str]:
        responses = await asyncio.to_thread(scu_find, port, identifier, STUDY_ROOT_FIND, calling)
        return {
            str(getattr(ds, keyword))
            for code, ds in responses
            if code == codes.PENDING and ds is not None
        }

    async def indexed() -> bool:
        found: set[str] = set()
        for study in {str(h.StudyInstanceUID) for h in headers}:
            series = Dataset()
            series.QueryRetrieveLevel = "SERIES"
            series.StudyInstanceUID = study
            series.SeriesInstanceUID = ""
            for series_uid in await matches(series, "SeriesInstanceUID"):
                image = Dataset()
                image.QueryRetrieveLevel = "IMAGE"
                image.StudyInstanceUID = study
                image.SeriesInstanceUID = series_uid
                image.SOPInstanceUID = ""
                found |= await matches(image, "SOPInstanceUID")
        return found >= wanted

    assert await eventually(indexed, within_s=within_s)
    return wanted
