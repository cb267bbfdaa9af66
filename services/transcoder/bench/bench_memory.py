"""Peak memory of the transcoder process while one big multi-frame object goes through it.

Issue 12: "a 2 GiB multi-frame object must not need 2 GiB of memory". The service runs as its
own process (``python -m pacs_transcoder``, no on-store consumer); a multi-frame 16-bit object
of the requested size is generated on disk frame by frame, streamed to ``Transcode`` from the
file, and the HTJ2K lossless answer is counted as it streams back (never held). The table shows
the service's resident memory after start and its peak (VmHWM) once the object went through.

    uv run python services/transcoder/bench/bench_memory.py [MiB]      (default 512)
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from pacs_common.clients.transcode import TranscodeClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls, ensure_local_pki, infra_environment, tls_dir
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, HTJ2KLossless, generate_uid
from rich.console import Console
from rich.table import Table

ROWS = COLUMNS = 512
FRAME_BYTES = ROWS * COLUMNS * 2


def write_multiframe(path: Path, frames: int) -> None:
    """A multi-frame grayscale word SC object, written frame by frame (never whole in memory)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = ROWS, COLUMNS, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = frames
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False
    write_dataset(header, ds)
    meta_bytes = DicomBytesIO()
    write_file_meta_info(meta_bytes, meta, enforce_standard=True)
    ramp = (np.add.outer(np.arange(ROWS), np.arange(COLUMNS)) % 4096).astype("<u2")
    # Noise in the low bits, so that the output is of a realistic size (about 3:1).
    noise = np.random.default_rng(1).integers(0, 64, size=(ROWS, COLUMNS), dtype=np.uint16)
    with path.open("wb") as out:
        out.write(b"\x00" * 128 + b"DICM" + meta_bytes.getvalue() + header.getvalue())
        out.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (frames * FRAME_BYTES).to_bytes(4, "little"))
        for index in range(frames):
            out.write(((ramp + np.roll(noise, index, axis=1)) % 4096).astype("<u2").tobytes())


async def file_chunks(path: Path, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(size):
            yield chunk


def peak_rss_mib(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of ``pid`` in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(mebibytes: int) -> None:
    ensure_local_pki()
    frames = max(1, mebibytes * 1024 * 1024 // FRAME_BYTES)
    port = free_port()
    env = {**os.environ, **infra_environment()}
    env.update(
        PACS_TLS_DIR=str(tls_dir()),
        PACS_TRANSCODER_GRPC_PORT=str(port),
        PACS_TRANSCODER_CONSUME_EVENTS="false",
        PACS_TRANSCODER_MAX_CONCURRENT="1",
    )
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "big.dcm"
        write_multiframe(source, frames)
        # A plain Popen: the bench waits for the service anyway (our own interpreter and module).
        service = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "pacs_transcoder"], env=env, stdout=subprocess.DEVNULL
        )
        try:
            channel = open_channel(f"127.0.0.1:{port}", client_tls("gateway"))
            client = TranscodeClient(channel, timeout=3600)
            for _ in range(200):
                await asyncio.sleep(0.1)
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    continue
            idle, _ = peak_rss_mib(service.pid)
            started = time.perf_counter()
            result, chunks = await client.open(
                file_chunks(source), HTJ2KLossless, size_hint=source.stat().st_size
            )
            received = 0
            async for chunk in chunks:
                received += len(chunk)
            elapsed = time.perf_counter() - started
            _, peak = peak_rss_mib(service.pid)
            await channel.close(None)
        finally:
            service.terminate()
            service.wait(timeout=30)
    table = Table(title="Transcoder memory, one multi-frame object to HTJ2K lossless")
    for column in ("object", "frames", "RSS after start", "peak RSS", "output", "MB/s"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{source_size_mib(frames):.0f} MiB", str(result.frames), f"{idle:.0f} MiB",
        f"{peak:.0f} MiB", f"{received / 2**20:.0f} MiB",
        f"{frames * FRAME_BYTES / 1e6 / elapsed:.0f}",
    )  # fmt: skip
    Console().print(table)


def source_size_mib(frames: int) -> float:
    return frames * FRAME_BYTES / 2**20


def main() -> None:
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 512))


if __name__ == "__main__":
    main()
