"""Benchmark of de-identification: the Basic Profile against dicognito on the same files, and
the OCR path.

Files: every sample pydicom and pydicom-data ship that names its SOP instance (about 225 files
from 1 KiB to 10 MiB, every common transfer syntax), read into memory once. Each tool gets the
same Part 10 bytes and must give Part 10 bytes back (parse, de-identify, write), one file after
another in this process:

* ``cloudpacs`` - :meth:`pacs_deid.deidentify.Deidentification.deidentify`, Basic Profile;
* ``cloudpacs via gRPC`` - the same through a running DeidService (mutual TLS, a bearer token
  from the local hydra, 4 files in flight), when the infrastructure of ``make up`` is there;
* ``dicognito`` - ``Anonymizer().anonymize`` (0.19, its defaults).

For each: files/s, CPU ms per file (this process; the gRPC row adds the in-process server's),
and how many attributes each result still holds that PS3.15 Table E.1-1 says to remove or
replace (:func:`left_behind`: judged by the table against the original file, so each tool's
own dummies and UID root count as replaced; top level only, the same for every tool).

OCR: 512x512 12-bit images with two lines of text drawn into the pixels (Pillow), through
Clean Pixel Data (decode, detect, mask, write); images/s and CPU per image. What bounds it is
the detection network of RapidOCR on the CPU.

    uv run python services/deid/bench/bench_deid.py [--rounds 2] [--ocr-images 6]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet
from dicognito.anonymizer import Anonymizer  # type: ignore[import-untyped]
from pacs_common.clients.deid import DeidClient
from pacs_common.errors import PacsError
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls, ensure_local_pki, infra_environment
from pacs_common.oauth_client import bearer_interceptors
from pacs_common.settings import KafkaSettings
from pydicom import dcmread
from pydicom.dataset import Dataset
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from deid_samples import pydicom_data_files, pydicom_files
from pacs_deid.app import create_app
from pacs_deid.deidentify import Deidentification, configure_pydicom
from pacs_deid.ocr import TextDetector
from pacs_deid.options import parse_options
from pacs_deid.pixels import PixelCleaner
from pacs_deid.profile import Profile
from pacs_deid.settings import DeidSettings
from pacs_testkit.hydra import Hydra
from test_deid_pixels import dataset, image_with_text

console = Console()
KEY = "bench-project-key-0123456789"


def settings() -> DeidSettings:
    return DeidSettings(
        grpc_port=0,
        shutdown_grace_s=1,
        projects={"bench": {"source_tenants": ["default"], "target_tenant": "r", "key": KEY}},
        reid_key=Fernet.generate_key().decode(),
        kafka=KafkaSettings(),
    )


def load_files() -> list[bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = [
            p
            for p in pydicom_files() + pydicom_data_files()
            if "SOPInstanceUID" in dcmread(p, stop_before_pixels=True)
        ]
    return [p.read_bytes() for p in paths]


def time_tool(
    name: str, files: list[bytes], rounds: int, run: Callable[[bytes], bytes]
) -> dict[str, object]:
    outputs: list[bytes] = []
    failures = 0
    wall = time.perf_counter()
    cpu = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for round_ in range(rounds):
            for data in files:
                try:
                    out = run(data)
                except Exception:  # a tool failing on a file is counted, not fatal
                    failures += 1
                    continue
                if round_ == 0:
                    outputs.append(out)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    done = rounds * len(files) - failures
    profile = Profile(frozenset())
    kinds: Counter[str] = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for original, out in zip(files, outputs, strict=False):
            before = dcmread(io.BytesIO(original), force=True)
            after = dcmread(io.BytesIO(out), force=True)
            kinds.update(left_behind(before, after, profile))
    left = sum(kinds.values())
    return {
        "tool": name,
        "files": done,
        "failed": failures,
        "files/s": done / wall,
        "cpu ms/file": 1000 * cpu / max(done, 1),
        "files/s per core": done / max(cpu, 1e-9),
        "violations": left,
        "of which": ", ".join(f"{k} {v}" for k, v in kinds.most_common()) or "-",
    }


ANONYMIZER = Anonymizer()
"""One anonymizer for every file, as dicognito is used (its replacements are consistent only
within one instance)."""


def left_behind(before: Dataset, after: Dataset, profile: Profile) -> Counter[str]:
    """What a tool left that Table E.1-1 removes or replaces, judged against the original so
    that any tool's own dummies and UID root count as replaced: an X attribute still present,
    a Z/D/U/C attribute still holding its original value, a private attribute, no Patient
    Identity Removed = YES. Top level only (the same for every tool)."""
    found: Counter[str] = Counter()
    if str(after.get("PatientIdentityRemoved", "")).upper() != "YES":
        found["no PatientIdentityRemoved"] += 1
    for elem in after:
        tag = int(elem.tag)
        if tag & 0x00010000:
            found["private kept"] += 1
            continue
        action = profile.action_for(tag)
        if action is None or elem.VR == "SQ":
            continue
        if action.code == "X":
            found["X kept"] += 1
        elif (
            tag in before and elem.value not in (None, "", b"") and elem.value == before[tag].value
        ):
            found[f"{action.code} unchanged"] += 1
    return found


def dicognito_run(data: bytes) -> bytes:
    ds = dcmread(io.BytesIO(data))
    ANONYMIZER.anonymize(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


async def service_row(files: list[bytes], rounds: int) -> dict[str, object] | None:
    """The same files through a running DeidService (skipped without the infrastructure)."""
    env = infra_environment()
    try:
        ensure_local_pki()
        app = create_app(settings())
        await app.start()
    except (PacsError, OSError, SystemExit) as exc:
        console.print(f"[yellow]service row skipped: {exc}[/yellow]")
        return None
    try:
        hydra = Hydra(env)
        channel = open_channel(
            f"127.0.0.1:{app.grpc_port}",
            client_tls(),
            interceptors=bearer_interceptors(hydra.client("default", ["retrieve"])),
        )
        client = DeidClient(channel, timeout=300)
        semaphore = asyncio.Semaphore(4)
        failures = 0

        async def one(data: bytes) -> None:
            nonlocal failures
            async with semaphore:
                try:
                    await client.deidentify_instance("bench", data)
                except PacsError:
                    failures += 1

        await one(files[0])  # first call: TLS handshake, token
        wall = time.perf_counter()
        cpu = time.process_time()
        for _ in range(rounds):
            await asyncio.gather(*(one(d) for d in files))
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        done = rounds * len(files) - failures
        await channel.close(None)
        return {
            "tool": "cloudpacs via gRPC (4 in flight)",
            "files": done,
            "failed": failures,
            "files/s": done / wall,
            "cpu ms/file": 1000 * cpu / max(done, 1),
            "files/s per core": done / max(cpu, 1e-9),
            "violations": "-",
            "of which": "-",
        }
    finally:
        await app.stop()


def ocr_row(images: int) -> dict[str, object]:
    deid = Deidentification(settings(), None, PixelCleaner([], TextDetector(0.5), 2))
    options = parse_options(["clean_pixel_data"])
    inputs = [
        dataset(image_with_text([(10, 10 + i, "DOE^JOHN 1974-03-02"), (300, 480, "MRN 4242")], 512))
        for i in range(images)
    ]
    deid.deidentify("bench", options, inputs[0])  # loads the models (about 2 s), not timed
    masked = 0
    wall = time.perf_counter()
    cpu = time.process_time()
    for data in inputs:
        masked += len(deid.deidentify("bench", options, data).masked)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    return {
        "images": images,
        "images/s": images / wall,
        "cpu ms/image": 1000 * cpu / images,
        "text boxes masked": masked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ocr-images", type=int, default=6)
    parser.add_argument("--no-service", action="store_true")
    args = parser.parse_args()
    for key, value in infra_environment().items():  # Kafka, hydra and TLS of `make up`
        os.environ.setdefault(key, value)
    configure_pydicom()  # as the service does at start
    files = load_files()
    size = sum(map(len, files)) / 2**20
    console.print(f"{len(files)} files, {size:.1f} MiB, {args.rounds} rounds")
    deid = Deidentification(settings())
    basic = frozenset[object]()
    rows = [
        time_tool(
            "cloudpacs (Basic Profile)",
            files,
            args.rounds,
            lambda d: deid.deidentify("bench", basic, d).data,  # type: ignore[arg-type]
        ),
        time_tool("dicognito 0.19", files, args.rounds, dicognito_run),
    ]
    if not args.no_service:
        row = asyncio.run(service_row(files, args.rounds))
        if row:
            rows.append(row)
    table = Table(title="de-identification, same files (one process, 2 shared cores)")
    for column in rows[0]:
        table.add_column(column, justify="right" if column != "tool" else "left")
    for row in rows:
        table.add_row(*(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)
    wall_ratio = float(rows[0]["files/s"]) / float(rows[1]["files/s"])  # type: ignore[arg-type]
    cpu_ratio = float(rows[0]["files/s per core"]) / float(rows[1]["files/s per core"])  # type: ignore[arg-type]
    console.print(
        f"cloudpacs / dicognito: {cpu_ratio:.2f}x per CPU second, {wall_ratio:.2f}x wall "
        "(goal >= 2x; on a shared machine the CPU figure is the comparable one)"
    )
    ocr = ocr_row(args.ocr_images)
    table = Table(title="Clean Pixel Data with OCR (512x512, text drawn into the pixels)")
    for column in ocr:
        table.add_column(column, justify="right")
    table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in ocr.values()))
    console.print(table)


if __name__ == "__main__":
    main()
