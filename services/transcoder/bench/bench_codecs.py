"""Codec throughput through TranscodeService versus the raw libraries, and the CT storage ratio
of the default on-store policy.

For each image kind (CT 512x512 signed 16-bit, MR 1024x1024 12-bit, US 640x480 RGB 8-bit, from
pydicom-data) and each codec:

- **encode**: the service turns the uncompressed Part 10 object into the syntax (real gRPC
  channel, mutual TLS, :class:`pacs_common.clients.transcode.TranscodeClient`); the raw
  library encodes the same decoded frame in memory (the call the service makes per frame).
- **decode**: the service turns the compressed object back into Explicit VR Little Endian; the
  raw library decodes the same codestream in memory (the plugin pydicom calls per frame).

MB/s are of decoded pixel data (the uncompressed size), medians of ``--rounds``; CPU-ms per
object is the process CPU time (client and in-process server together for the service, so it
includes the gRPC hop, Part 10 parsing and writing, and the spools). The issue's goal is the
service at >= 70 % of the raw library per codec; what bounds the service is the fixed cost per
object (gRPC round trip, parsing the header, writing the Part 10 object) on small images and
the codec itself on large ones.

The service runs in this process (its codecs release the GIL; the gRPC hop is real). The last
table: the storage the default policy (CT and MR to HTJ2K lossless) saves on pydicom-data's CT.

    uv run python services/transcoder/bench/bench_codecs.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import data_store
import imagecodecs
import jpeg_ls
import libjpeg
import numpy as np
import openjpeg
import rle.utils
from pacs_common.clients.transcode import TranscodeClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls, ensure_local_pki, infra_environment
from pacs_transcoder.app import create_app
from pacs_transcoder.encoders import LossyOptions
from pacs_transcoder.policy import DEFAULT_RULES
from pacs_transcoder.settings import TranscoderSettings
from pacs_transcoder.transcode import transcode
from pydicom import dcmread, uid
from pydicom.encaps import generate_frames
from pydicom.pixels.encoders.base import get_encoder
from rich.console import Console
from rich.table import Table

DATA = Path(data_store.__file__).parent / "data"
IMAGES = {"CT 16s": "693_UNCR.dcm", "MR 12u": "MR2_UNCR.dcm", "US RGB8": "US1_UNCR.dcm"}
CODECS = {
    "RLE": uid.RLELossless,
    "JPEG LL SV1": uid.JPEGLosslessSV1,
    "JPEG-LS": uid.JPEGLSLossless,
    "J2K LL": uid.JPEG2000Lossless,
    "HTJ2K LL": uid.HTJ2KLossless,
    "HTJ2K lossy": uid.HTJ2K,
    "JPEG base": uid.JPEGBaseline8Bit,
}
OPTIONS = LossyOptions()


@dataclass
class Frame:
    """One decoded frame and what the raw encoders need to know about it."""

    pixels: np.ndarray
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool


def _frame(part10: bytes) -> Frame:
    ds = dcmread(io.BytesIO(part10))
    return Frame(
        ds.pixel_array, int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel),
        int(ds.BitsAllocated), int(ds.BitsStored), int(ds.PixelRepresentation) == 1,
    )  # fmt: skip


def raw_encoder(syntax: str, f: Frame) -> Callable[[], bytes]:  # noqa: PLR0911  (one per codec)
    """The library call that encodes ``f`` in ``syntax`` (what the service does per frame)."""
    a = np.ascontiguousarray(f.pixels)
    color = f.samples == 3
    if syntax == uid.RLELossless:
        return lambda: get_encoder(uid.RLELossless).encode(
            a, rows=f.rows, columns=f.columns, samples_per_pixel=f.samples, number_of_frames=1,
            bits_allocated=f.bits_allocated, bits_stored=f.bits_stored,
            pixel_representation=int(f.signed), photometric_interpretation=
            "RGB" if color else "MONOCHROME2", planar_configuration=0,
        )  # fmt: skip
    if syntax == uid.JPEGLSLossless:
        return lambda: get_encoder(uid.JPEGLSLossless).encode(
            a, rows=f.rows, columns=f.columns, samples_per_pixel=f.samples, number_of_frames=1,
            bits_allocated=f.bits_allocated, bits_stored=f.bits_stored,
            pixel_representation=int(f.signed), photometric_interpretation=
            "RGB" if color else "MONOCHROME2", planar_configuration=0,
        )  # fmt: skip
    unsigned = a.view(np.uint16) & ((1 << f.bits_stored) - 1) if f.signed else a
    if syntax == uid.JPEGLosslessSV1:
        return lambda: imagecodecs.jpeg8_encode(
            unsigned, lossless=True, predictor=1, bitspersample=f.bits_stored
        )
    if syntax == uid.JPEG2000Lossless:
        return lambda: imagecodecs.jpeg2k_encode(
            a, codecformat="J2K", bitspersample=f.bits_stored, resolutions=6, reversible=True,
            mct=color,
        )  # fmt: skip
    if syntax == uid.HTJ2KLossless:
        return lambda: imagecodecs.htj2k_encode(a, rgb=color, resolutions=5, reversible=True)
    if syntax == uid.HTJ2K:
        return lambda: imagecodecs.htj2k_encode(
            a, level=OPTIONS.htj2k_quantization, rgb=color, resolutions=5, reversible=False
        )
    return lambda: imagecodecs.jpeg8_encode(
        a, level=OPTIONS.jpeg_quality, outcolorspace="YCbCr", subsampling="422"
    )


def raw_decoder(syntax: str, codestream: bytes, f: Frame) -> Callable[[], object]:
    """The plugin call pydicom makes to decode one frame of ``syntax``."""
    if syntax == uid.RLELossless:
        return lambda: rle.utils.decode_frame(codestream, f.rows * f.columns, f.bits_allocated, "<")
    if syntax == uid.JPEGLSLossless:
        buffer = np.frombuffer(codestream, dtype=np.uint8)
        return lambda: jpeg_ls.decode(buffer)
    if syntax in (uid.JPEGLosslessSV1, uid.JPEGBaseline8Bit):
        return lambda: libjpeg.decode(codestream)
    return lambda: openjpeg.decode(codestream)


def _timed(call: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of ``call``."""
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


async def _timed_async(call: Callable[[], object], rounds: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        await call()  # type: ignore[misc]
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _encodable(syntax: str, f: Frame) -> bool:
    if syntax == uid.JPEGBaseline8Bit:
        return f.bits_stored <= 8
    return True


async def run(rounds: int) -> None:
    ensure_local_pki()
    for key, value in infra_environment().items():  # Kafka settings are checked at start
        os.environ.setdefault(key, value)
    console = Console()
    app = create_app(
        TranscoderSettings(grpc_port=0, consume_events=False, storage_target="127.0.0.1:1")
    )
    await app.start()
    channel = open_channel(f"127.0.0.1:{app.grpc_port}", client_tls("gateway"))
    client = TranscodeClient(channel, timeout=300)
    table = Table(title=f"TranscodeService vs raw library, MB/s of pixel data (median of {rounds})")
    for column in (
        "image", "codec", "op", "service MB/s", "raw MB/s", "service/raw",
        "service CPU-ms", "raw CPU-ms", "ratio",
    ):  # fmt: skip
        table.add_column(column, justify="right" if column not in ("image", "codec") else "left")
    try:
        for image, name in IMAGES.items():
            source = (DATA / name).read_bytes()
            f = _frame(source)
            megabytes = f.pixels.nbytes / 1e6
            for codec, syntax in CODECS.items():
                if not _encodable(syntax, f):
                    continue
                lossy = syntax in (uid.HTJ2K, uid.JPEGBaseline8Bit)
                _, compressed = await client.transcode(source, syntax, allow_lossy=lossy)
                ds = dcmread(io.BytesIO(compressed))
                codestream = next(generate_frames(ds.PixelData, number_of_frames=1))
                service_enc = await _timed_async(
                    lambda s=syntax, lo=lossy, b=source: client.transcode(b, s, allow_lossy=lo),
                    rounds,
                )
                raw_enc = _timed(raw_encoder(syntax, f), rounds)
                service_dec = await _timed_async(
                    lambda c=compressed: client.transcode(c, uid.ExplicitVRLittleEndian), rounds
                )
                raw_dec = _timed(raw_decoder(syntax, codestream, f), rounds)
                ratio = f"{f.pixels.nbytes / len(codestream):.2f}"
                for op, service, raw in (
                    ("encode", service_enc, raw_enc),
                    ("decode", service_dec, raw_dec),
                ):
                    table.add_row(
                        image, codec, op,
                        f"{megabytes / service[0]:.0f}", f"{megabytes / raw[0]:.0f}",
                        f"{raw[0] / service[0]:.0%}",
                        f"{service[1] * 1000:.1f}", f"{raw[1] * 1000:.1f}",
                        ratio if op == "encode" else "",
                    )  # fmt: skip
        console.print(table)
        console.print(_policy_ratio())
    finally:
        await channel.close(None)
        await app.stop()


def _policy_ratio() -> Table:
    """Bytes stored before and after the default policy on the CT files of pydicom-data."""
    rule = next(r for r in DEFAULT_RULES if r.modality == "CT")
    table = Table(title=f"Default on-store policy on CT ({rule.name}): storage saved")
    for column in ("file", "stored bytes", "after policy", "ratio"):
        table.add_column(column, justify="right" if column != "file" else "left")
    total_in = total_out = 0
    for path in sorted(DATA.glob("*.dcm")):
        try:
            header = dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: S112  (pydicom-data holds a few non-Part-10 files)
            continue
        if header.get("Modality") != "CT" or not rule.applies_to(
            str(header.file_meta.TransferSyntaxUID)
        ):
            continue
        out = io.BytesIO()
        transcode(io.BytesIO(path.read_bytes()), out, rule.transfer_syntax)
        size_in, size_out = path.stat().st_size, len(out.getvalue())
        total_in += size_in
        total_out += size_out
        table.add_row(path.name, f"{size_in:,}", f"{size_out:,}", f"{size_in / size_out:.2f}")
    table.add_row("total", f"{total_in:,}", f"{total_out:,}", f"{total_in / max(1, total_out):.2f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="repetitions per measurement")
    asyncio.run(run(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
