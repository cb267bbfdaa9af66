"""DICOM ingest throughput: cloudpacs (gateway → storage → S3 + Kafka) versus Orthanc.

The same CT series is sent with DCMTK ``storescu`` to each target over one association and
over eight parallel associations (eight ``storescu`` processes, each sending 1/8 of the files),
and the wall time from the first connection to the last C-STORE response is measured.

* cloudpacs runs as real processes (:class:`pacs_cli.stack.Stack`: storage, indexer and a
  gateway with ``--workers`` receiving processes) on a fresh bucket per run, over the
  infrastructure of ``infra/up.sh``. A C-STORE Success means the instance is in S3 and its
  InstanceStored event was acknowledged by Kafka; after each run the bench counts the objects
  in the bucket and fails unless every instance is there.
* Orthanc (Debian 1.10) runs with defaults, ``DicomAlwaysAllowStore`` and a fresh storage
  folder per run; after each run its ``/statistics`` must count every instance.

DCMTK and Orthanc disable Nagle only when ``TCP_NODELAY=1`` is in their environment (without
it both are ~30x slower on loopback), so it is set for both.

``--profile DIR`` adds one extra cloudpacs run (eight associations) sampled with py-spy
(``uvx py-spy record --gil``: only the thread holding the GIL, i.e. Python CPU time) and prints
the top functions by self and inclusive time of the gateway processes and of the storage
process; throughput of that run is not reported.

    uv run python services/gateway/bench/bench_ingest.py [--instances N] [--workers N]
        [--rounds N] [--json FILE] [--profile DIR]
    (needs infra/up.sh, DCMTK and Orthanc)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from cpu_meter import CLIENT, CpuMeter, infra_pids
from pacs_cli.stack import Stack, StackConfig
from pacs_common.kafka_client import kafka_client_options
from pacs_common.local import free_port, load_infra_env
from pacs_common.s3 import make_s3_client
from pacs_common.settings import KafkaSettings, S3Settings
from pacs_testkit.kafka import group_at_end_of_topic
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / ".cache" / "bench" / "ingest"
STORESCU = "/usr/bin/storescu"  # DCMTK; the venv's pynetdicom ``storescu`` comes first on PATH
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
ORTHANC_PG_PLUGIN = "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"  # orthanc-postgresql
GENERATOR_VERSION = 1  # bump when the generated files change
SIDE = 512
ASSOCIATIONS = (1, 8)
console = Console(width=max(Console().width, 120))  # the tables are wide; logs are files


@dataclass
class Result:
    """One measured transfer."""

    target: str
    associations: int
    instances: int
    bytes: int
    seconds: float
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU time each process (tree) used from the first C-STORE until every instance was
    findable by C-FIND (the indexer catching up included), by name."""
    findable_seconds: float = 0.0
    """From the first C-STORE until a C-FIND counts every instance of the series."""

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds

    @property
    def findable_per_second(self) -> float:
        return self.instances / self.findable_seconds if self.findable_seconds else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes / self.seconds / 1e6


# --------------------------------------------------------------------------------------------
# Data set


def ct_slice(rng: np.random.Generator, index: int, count: int) -> np.ndarray:
    """A 512x512 signed 16-bit CT-like slice: air, a body ellipse with noise, a 'spine'."""
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    cy, cx = SIDE / 2, SIDE / 2
    scale = 1.0 - 0.3 * abs(index / max(count - 1, 1) - 0.5)
    body = ((x - cx) / (200 * scale)) ** 2 + ((y - cy) / (150 * scale)) ** 2 <= 1
    spine = ((x - cx) / 25) ** 2 + ((y - cy - 90 * scale) / 25) ** 2 <= 1
    image = np.full((SIDE, SIDE), -1000.0, dtype=np.float32)
    image[body] = 40.0
    image[spine] = 700.0
    image += rng.normal(0, 12, size=image.shape).astype(np.float32)
    # Stored values with RescaleIntercept -1024, RescaleSlope 1.
    return np.clip(image + 1024, -2048, 4095).astype(np.int16)


def generate(count: int) -> list[Path]:
    """``count`` CT slices of one series (cached: generated once per count)."""
    folder = CACHE / f"ct{SIDE}-{count}-v{GENERATOR_VERSION}"
    marker = folder / "complete"
    files = [folder / f"{i:05d}.dcm" for i in range(count)]
    if marker.exists():
        return files
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    template = dcmread(get_testdata_file("CT_small.dcm"))
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(20240611)
    started = time.perf_counter()
    for index, path in enumerate(files):
        ds = template.copy()
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
        ds.ImagePositionPatient = [-250.0, -250.0, -index * 1.25]
        ds.SliceLocation = -index * 1.25
        ds.SliceThickness = 1.25
        ds.PixelSpacing = [0.9765625, 0.9765625]
        ds.Rows = ds.Columns = SIDE
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        for keyword in ("LargestImagePixelValue", "SmallestImagePixelValue"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.PixelData = ct_slice(rng, index, count).tobytes()
        ds.save_as(path, enforce_file_format=True)
    marker.write_text("ok\n")
    console.print(f"generated {count} CT slices in {folder} ({time.perf_counter() - started:.1f}s)")
    return files


def generate_small_studies(count: int) -> list[Path]:
    """``count`` one-instance studies (pydicom's 39 KiB CT_small, new UIDs; cached)."""
    folder = CACHE / f"small-studies-{count}-v{GENERATOR_VERSION}"
    marker = folder / "complete"
    files = [folder / f"{i:05d}.dcm" for i in range(count)]
    if marker.exists():
        return files
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    template = dcmread(get_testdata_file("CT_small.dcm"))
    for path in files:
        ds = template.copy()
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
            generate_uid(),
            generate_uid(),
            sop,
        )
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.save_as(path, enforce_file_format=True)
    marker.write_text("ok\n")
    console.print(f"generated {count} one-instance studies in {folder}")
    return files


# --------------------------------------------------------------------------------------------
# Sending


def send(
    files: list[Path],
    port: int,
    called_ae: str,
    associations: int,
    meter: CpuMeter,
    *,
    findable_timeout_s: float = 300,
) -> tuple[float, float, dict[str, float]]:
    """Wall time to send ``files`` with ``associations`` parallel storescu processes, then wall
    time until a C-FIND finds them all, waiting at most ``findable_timeout_s`` after the last
    C-STORE (``meter`` counts the CPU time of the whole span).

    Raises:
        RuntimeError: a storescu process failed.
    """
    env = dict(os.environ, TCP_NODELAY="1")
    shares = [files[i::associations] for i in range(associations)]
    with tempfile.TemporaryDirectory(prefix="bench-storescu-") as logs:
        outputs = [Path(logs) / f"storescu-{i}.log" for i in range(associations)]
        meter.start()
        started = time.perf_counter()
        processes = []
        for share, output in zip(shares, outputs, strict=True):
            with output.open("wb") as log:
                command = [STORESCU, "-aet", "BENCH", "-aec", called_ae, "127.0.0.1", str(port)]
                processes.append(
                    subprocess.Popen(  # noqa: S603  (fixed DCMTK binary, our own files)
                        [*command, *map(str, share)],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
        codes = [process.wait() for process in processes]
        elapsed = time.perf_counter() - started
        if _one_series(files):
            wait_findable(files, port, called_ae, findable_timeout_s)
        else:
            wait_studies_findable(len(files), port, called_ae, findable_timeout_s)
        findable = time.perf_counter() - started
        cpu = meter.stop()
        failed = [
            (code, output.read_text(errors="replace")[-2000:])
            for code, output in zip(codes, outputs, strict=True)
            if code != 0 or "E: " in output.read_text(errors="replace")
        ]
    if failed:
        code, text = failed[0]
        raise RuntimeError(f"{len(failed)} storescu process(es) failed (exit {code}):\n{text}")
    return elapsed, findable, cpu


def _one_series(files: list[Path]) -> bool:
    first, last = (dcmread(path, stop_before_pixels=True) for path in (files[0], files[-1]))
    return bool(first.SeriesInstanceUID == last.SeriesInstanceUID)


def _find_association(port: int, called_ae: str, response_timeout_s: float = 30) -> Any:
    ae = AE(ae_title="BENCHFIND")
    # A C-FIND listing 100 000 studies takes Orthanc with its PostgreSQL index minutes; past
    # pynetdicom's default 30 s between responses the association is aborted.
    ae.dimse_timeout = ae.network_timeout = response_timeout_s
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        raise RuntimeError(f"C-FIND association to {called_ae} refused")
    return assoc


def wait_studies_findable(count: int, port: int, called_ae: str, timeout_s: float) -> None:
    """Poll a study-level C-FIND for every study until it returns ``count`` of them (the
    targets hold only this run's studies).

    Raises:
        RuntimeError: the count is not reached within ``timeout_s``.
    """
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    assoc = _find_association(port, called_ae, response_timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    found = 0
    try:
        while time.monotonic() < deadline:
            found = sum(
                1
                for status, identifier in assoc.send_c_find(
                    query, StudyRootQueryRetrieveInformationModelFind
                )
                if status and status.Status in (0xFF00, 0xFF01) and identifier is not None
            )
            if found >= count:
                return
            time.sleep(0.05)
    finally:
        assoc.release()
    raise RuntimeError(f"{called_ae}: C-FIND returns {found} of {count} studies")


def wait_findable(files: list[Path], port: int, called_ae: str, timeout_s: float) -> None:
    """Poll a series-level C-FIND (NumberOfSeriesRelatedInstances, PS3.4 C.3.4) until it
    counts every file of the series; each poll is one C-FIND on a kept association.

    Raises:
        RuntimeError: the count is not reached within ``timeout_s``.
    """
    first = dcmread(files[0], stop_before_pixels=True)
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = first.StudyInstanceUID
    query.SeriesInstanceUID = first.SeriesInstanceUID
    query.NumberOfSeriesRelatedInstances = ""
    assoc = _find_association(port, called_ae)
    deadline = time.monotonic() + timeout_s
    count = 0
    try:
        while time.monotonic() < deadline:
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            ):
                if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                    count = int(identifier.get("NumberOfSeriesRelatedInstances", 0) or 0)
            if count >= len(files):
                return
            time.sleep(0.02)
    finally:
        assoc.release()
    raise RuntimeError(f"{called_ae}: C-FIND counts {count} of {len(files)} after {timeout_s}s")


# --------------------------------------------------------------------------------------------
# cloudpacs


def s3_client() -> Any:
    return make_s3_client(S3Settings())


def count_objects(client: Any, bucket: str) -> collections.Counter[str]:
    """Objects in ``bucket`` by kind: instance (current .dcm) or other."""
    counts: collections.Counter[str] = collections.Counter()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            current = key.endswith(".dcm") and ".versions/" not in key
            counts["instance" if current else "other"] += 1
    return counts


def drop_bucket(client: Any, bucket: str) -> None:
    """Delete the bench bucket and its objects (bench data must not pile up)."""
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    except Exception as exc:  # clean-up is best effort; the result stands
        console.print(f"[yellow]could not delete bucket {bucket}: {exc}[/yellow]")


class CloudpacsTarget:
    """A fresh cloudpacs stack (own bucket, index and consumer group) for one run; ``env``
    adds to (or overrides) the services' environment, e.g. ``PACS_INDEXER_DATABASE_URL``."""

    def __init__(
        self, workers: int, write_path: str = "grant", env: dict[str, str] | None = None
    ) -> None:
        self.run = uuid.uuid4().hex[:12]
        self.bucket = f"bench-{self.run}"
        self.run_dir = Path(tempfile.mkdtemp(prefix="bench-stack-"))
        self.dicom_port = free_port()
        self.workers = workers
        self.consumer_group = f"bench-indexer-{self.run}"
        self.stack = Stack(
            StackConfig(
                run_dir=self.run_dir,
                storage_port=free_port(),
                indexer_port=free_port(),
                gateway_port=free_port(),
                hl7_port=free_port(),
                mllp_port=free_port(),
                dicom_port=self.dicom_port,
                audit_port=free_port(),
                env={
                    "PACS_S3_BUCKET": self.bucket,
                    "PACS_INDEXER_CONSUMER_GROUP": self.consumer_group,
                    "PACS_GATEWAY_WORKERS": str(workers),
                    "PACS_GATEWAY_WRITE_PATH": write_path,
                    **(env or {}),
                },
            )
        )

    def __enter__(self) -> CloudpacsTarget:
        asyncio.run(group_at_end_of_topic(self.consumer_group, KafkaSettings()))
        self.stack.start(timeout_s=90)
        # The first gateway process binds the port; spawned workers need seconds to import
        # before they listen too. Measure only once every worker takes connections.
        wait_listeners(self.dicom_port, self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def cpu_meter(self) -> CpuMeter:
        """A meter of every service of the stack (gateway with its workers, the audit service
        consuming each C-STORE's audit event, and the idle ones) and of S3 and Kafka."""
        roots = {}
        for process in self.stack.processes:
            pid = process.pid()
            if pid is not None:
                roots[process.spec.name] = pid
        return CpuMeter(roots | infra_pids())

    def verify(self, client: Any, expected: int) -> None:
        counts = count_objects(client, self.bucket)
        if counts["instance"] != expected:
            raise SystemExit(
                f"FAIL: cloudpacs bucket {self.bucket} holds {counts['instance']} instances "
                f"(and {counts['other']} other objects) after {expected} C-STORE successes;"
                f" logs in {self.run_dir}"
            )


def run_cloudpacs(
    files: list[Path], associations: int, workers: int, size: int, write_path: str = "grant"
) -> Result:
    client = s3_client()
    target = CloudpacsTarget(workers, write_path)
    try:
        with target:
            seconds, findable, cpu = send(
                files, target.dicom_port, "CLOUDPACS", associations, target.cpu_meter()
            )
            target.verify(client, len(files))
    finally:
        drop_bucket(client, target.bucket)
    name = "cloudpacs" if write_path == "grant" else f"cloudpacs ({write_path})"
    return Result(name, associations, len(files), size, seconds, cpu, findable)


def store_floor_ms(size: int, repetitions: int = 30) -> float:
    """Median of one S3 PUT of ``size`` bytes (SHA-256 sent, as storage does) plus one Kafka
    send acknowledged by every replica: what no C-STORE through cloudpacs can undercut."""
    client = s3_client()
    bucket = f"bench-floor-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    data = os.urandom(size)

    async def measure() -> list[float]:
        producer = AIOKafkaProducer(**kafka_client_options(KafkaSettings()), acks="all")
        await producer.start()
        times = []
        try:
            for index in range(repetitions):
                started = time.perf_counter()
                digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
                await asyncio.to_thread(
                    client.put_object,
                    Bucket=bucket,
                    Key=f"floor/{index}",
                    Body=data,
                    ChecksumSHA256=digest,
                )
                await producer.send_and_wait("pacs.bench.floor.v1", b"x" * 1024, key=b"k")
                times.append(time.perf_counter() - started)
        finally:
            await producer.stop()
        return times

    try:
        return 1000 * statistics.median(asyncio.run(measure()))
    finally:
        drop_bucket(client, bucket)


# --------------------------------------------------------------------------------------------
# Orthanc


def wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def wait_listeners(port: int, count: int, timeout_s: float = 60) -> None:
    """Wait until ``count`` sockets listen on ``port`` (SO_REUSEPORT workers), per ``ss``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listing = subprocess.run(  # noqa: S603
            ["/usr/bin/ss", "-Hltn", f"sport = :{port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if len(listing.splitlines()) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"fewer than {count} listeners on port {port} after {timeout_s:.0f}s")


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310  (loopback Orthanc)
        return json.loads(reply.read())


class OrthancTarget:
    """Orthanc with defaults, a fresh storage folder and loopback-only traffic; with
    ``postgres_url`` its index goes to a fresh database there through Debian's
    ``orthanc-postgresql`` plugin (the files stay on disk)."""

    def __init__(self, postgres_url: str | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bench-orthanc-"))
        self.dicom_port, self.http_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.postgres_url = postgres_url
        self._database: str | None = None

    def __enter__(self) -> OrthancTarget:
        config = {
            "Name": "bench",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "RemoteAccessAllowed": False,
        }
        if self.postgres_url:
            config |= self._postgres_index()
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
        deadline = time.monotonic() + 30
        while True:
            try:
                http_json(f"http://127.0.0.1:{self.http_port}/system")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start; log in {self.folder}") from None
                time.sleep(0.2)
        wait_port(self.dicom_port)
        return self

    def _postgres_index(self) -> dict[str, Any]:
        url = sa.engine.make_url(self.postgres_url or "")
        self._database = f"bench_orthanc_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self._database}"'))
        admin.dispose()
        return {
            "Plugins": [ORTHANC_PG_PLUGIN],
            "PostgreSQL": {
                "EnableIndex": True,
                "EnableStorage": False,
                "Host": url.host or "127.0.0.1",
                "Port": url.port or 5432,
                "Database": self._database,
                "Username": url.username or "postgres",
                "Password": url.password or "",
                "Lock": False,
            },
        }

    def _drop_database(self) -> None:
        if not self._database:
            return
        admin = sa.create_engine(
            sa.engine.make_url(self.postgres_url or ""), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self._database}" WITH (FORCE)'))
        admin.dispose()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        self._drop_database()

    def verify(self, expected: int) -> None:
        stored = http_json(f"http://127.0.0.1:{self.http_port}/statistics")["CountInstances"]
        if stored != expected:
            raise SystemExit(f"FAIL: Orthanc holds {stored} instances after sending {expected}")


def run_orthanc(
    files: list[Path], associations: int, size: int, postgres_url: str | None = None
) -> Result:
    with OrthancTarget(postgres_url) as target:
        assert target.process is not None
        seconds, findable, cpu = send(
            files,
            target.dicom_port,
            "ORTHANC",
            associations,
            CpuMeter({"Orthanc": target.process.pid}),
        )
        target.verify(len(files))
    name = "orthanc (postgresql)" if postgres_url else "orthanc"
    return Result(name, associations, len(files), size, seconds, cpu, findable)


# --------------------------------------------------------------------------------------------
# Profile


def profile(files: list[Path], workers: int, folder: Path) -> None:
    """One cloudpacs run with eight associations under py-spy; prints the top functions."""
    folder.mkdir(parents=True, exist_ok=True)
    client = s3_client()
    target = CloudpacsTarget(workers)
    try:
        with target:
            pids = {
                "gateway": target.stack.process("gateway").pid(),
                "storage": target.stack.process("storage").pid(),
            }
            spies = {}
            for name, pid in pids.items():
                command = ["uvx", "py-spy", "record", "--pid", str(pid), "--format", "raw"]
                command += [
                    "--rate",
                    "200",
                    "--gil",
                    "-o",
                    str(folder / f"{name}.txt"),
                    "--nonblocking",
                ]
                if name == "gateway":
                    command.append("--subprocesses")
                spies[name] = subprocess.Popen(  # noqa: S603
                    command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
            time.sleep(3)  # py-spy attaches (and uvx resolves) before the traffic starts
            seconds, _, _ = send(files, target.dicom_port, "CLOUDPACS", 8, target.cpu_meter())
            for spy in spies.values():
                spy.send_signal(signal.SIGINT)
            for name, spy in spies.items():
                _, err = spy.communicate(timeout=60)
                if not (folder / f"{name}.txt").exists():
                    raise RuntimeError(f"py-spy gave no profile of {name}: {err.decode()[-800:]}")
            target.verify(client, len(files))
    finally:
        drop_bucket(client, target.bucket)
    console.print(f"profiled run: {len(files) / seconds:.1f} instances/s (with py-spy attached)")
    for name in ("gateway", "storage"):
        print_profile(name, folder / f"{name}.txt")


def print_profile(name: str, path: Path, top: int = 10) -> None:
    """Top functions by self and inclusive samples of a py-spy ``raw`` (collapsed) profile."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        frames = [f for f in frames if not _generic(f)]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    for title, counter in (("self", own), ("inclusive", inclusive)):
        table = Table(title=f"{name}: top {top} by {title} time ({total} samples, GIL held)")
        table.add_column("function")
        table.add_column("%", justify="right")
        for function, count in counter.most_common(top):
            table.add_row(function, f"{100 * count / max(total, 1):.1f}")
        console.print(table)


GENERIC = ("threading.py", "asyncio/", "runpy", "multiprocessing/", "__main__.py", "<string>")


def _generic(function: str) -> bool:
    """Frames every sample shares (thread and event-loop plumbing): useless in a top 10."""
    return function.startswith(("process ", "thread ", "spawn_main", " spawn_main")) or any(
        part in function for part in GENERIC
    )


def _function(frame: str) -> str:
    """``func (path/to/file.py:123)`` → ``func (file.py)``: aggregate over lines."""
    function, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    marker = "site-packages/"
    if marker in file:
        file = file.split(marker, 1)[1]
    elif "/src/" in file:
        file = file.split("/src/", 1)[1]
    return f"{function} ({file})" if file else function


# --------------------------------------------------------------------------------------------
# Report


def summarise(results: list[Result]) -> list[Result]:
    """The median run of each (target, associations)."""
    groups: dict[tuple[str, int], list[Result]] = collections.defaultdict(list)
    for result in results:
        groups[(result.target, result.associations)].append(result)
    summary = []
    for (target, assoc), runs in groups.items():
        median = statistics.median(r.seconds for r in runs)
        closest = min(runs, key=lambda r: abs(r.seconds - median))
        findable = statistics.median(r.findable_seconds for r in runs)
        summary.append(
            Result(
                target,
                assoc,
                runs[0].instances,
                runs[0].bytes,
                median,
                closest.cpu_seconds,
                findable,
            )
        )
    return summary


def print_table(
    results: list[Result], workers: int, rounds: int, what: str = "one CT series"
) -> None:
    orthanc = {r.associations: r.findable_per_second for r in results if r.target == "orthanc"}
    orthanc_pg = {
        r.associations: r.findable_per_second for r in results if r.target == "orthanc (postgresql)"
    }
    table = Table(
        title=f"DICOM C-STORE ingest of {what}, storescu → target until C-FIND finds all"
        f" (cloudpacs gateway workers={workers}, median of {rounds} round(s))"
    )
    for column in (
        "target",
        "associations",
        "instances",
        "acked s",
        "acked inst/s",
        "findable s",
        "findable inst/s",
        "MB/s",
        "vs Orthanc (findable)",
        "vs Orthanc PostgreSQL",
    ):
        table.add_column(column, justify="left" if column == "target" else "right")
    for r in sorted(results, key=lambda r: (r.associations, r.target != "orthanc")):
        ratio = (
            r.findable_per_second / orthanc[r.associations] if r.associations in orthanc else None
        )
        table.add_row(
            r.target,
            str(r.associations),
            str(r.instances),
            f"{r.seconds:.2f}",
            f"{r.per_second:.1f}",
            f"{r.findable_seconds:.2f}",
            f"{r.findable_per_second:.1f}",
            f"{r.mb_per_second:.1f}",
            "" if r.target.startswith("orthanc") or ratio is None else f"{ratio:.2f}",
            f"{r.findable_per_second / orthanc_pg[r.associations]:.2f}"
            if r.target.startswith("cloudpacs") and r.associations in orthanc_pg
            else "",
        )
    console.print(table)


def print_cpu_table(results: list[Result], floor_ms: float) -> None:
    """Where the time goes: CPU milliseconds per instance by process, the rate the cores allow,
    and the C-STORE round trip seen by one association.

    The ceiling is cores / (CPU time per instance): no number of associations goes faster when
    every process shares the same cores, which is what bounds the 8-association runs. One
    association waits for each response before sending the next instance, so its rate is
    bounded by the round trip instead, printed beside its floor: one S3 PUT of an instance's
    size plus one Kafka acknowledgement (acks=all), measured in the same run.
    """
    cores = os.cpu_count() or 1
    names = [
        CLIENT,
        "gateway",
        "storage",
        "indexer",
        "audit",
        "hl7",
        "dicomweb",
        "S3 server",
        "Kafka",
        "Orthanc",
    ]
    present = [n for n in names if any(n in r.cpu_seconds for r in results)]
    table = Table(title=f"Where the time goes: CPU ms per instance by process ({cores} cores)")
    headers = ["target", "assoc", *present, "total", "ceiling/s", "round trip ms", "floor ms"]
    for column in headers:
        table.add_column(column, justify="left" if column == "target" else "right")
    for r in sorted(results, key=lambda r: (r.associations, r.target != "orthanc")):
        per_instance = {n: 1000 * s / r.instances for n, s in r.cpu_seconds.items()}
        total = sum(per_instance.values())
        table.add_row(
            r.target,
            str(r.associations),
            *(f"{per_instance[n]:.1f}" if n in per_instance else "" for n in present),
            f"{total:.1f}",
            f"{cores * 1000 / total:.0f}" if total else "",
            f"{1000 * r.seconds * r.associations / r.instances:.1f}",
            f"{floor_ms:.1f}" if r.target.startswith("cloudpacs") else "",
        )
    console.print(table)


def measure_series(
    files: list[Path], size: int, args: argparse.Namespace, postgres_url: str | None
) -> list[Result]:
    """Every target at 1 and 8 associations, ``args.rounds`` times, alternating targets so all
    see the same background load (a small shared VM)."""
    results: list[Result] = []
    for round_number in range(args.rounds):
        for associations in ASSOCIATIONS:
            runs: list[Callable[[], Result]] = []
            if not args.skip_orthanc:
                runs.append(lambda a=associations: run_orthanc(files, a, size))
                if postgres_url:
                    runs.append(lambda a=associations: run_orthanc(files, a, size, postgres_url))
            runs += [
                lambda a=associations, w=write_path: run_cloudpacs(files, a, args.workers, size, w)
                for write_path in args.write_paths.split(",")
            ]
            for run in runs:
                results.append(run())
                console.print(f"  round {round_number + 1}: {describe(results[-1])}")
    return results


def measure_small_studies(args: argparse.Namespace) -> list[Result]:
    """Many one-instance studies over 8 associations until a C-FIND lists them all."""
    studies = generate_small_studies(args.small_studies)
    studies_size = sum(path.stat().st_size for path in studies)
    results = []
    if not args.skip_orthanc:
        results.append(run_orthanc(studies, 8, studies_size))
        console.print(f"  small studies: {describe(results[-1])}")
    results.append(run_cloudpacs(studies, 8, args.workers, studies_size))
    console.print(f"  small studies: {describe(results[-1])}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=400, help="CT slices (~513 KiB each)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="gateway receiving processes"
    )
    parser.add_argument("--rounds", type=int, default=1, help="repetitions (median reported)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--profile", type=Path, help="also profile a cloudpacs run into DIR")
    parser.add_argument("--skip-orthanc", action="store_true", help="measure cloudpacs only")
    parser.add_argument(
        "--small-studies",
        type=int,
        default=2000,
        help="also send this many one-instance studies over 8 associations (0: skip)",
    )
    parser.add_argument(
        "--write-paths",
        default="grant,stream",
        help="cloudpacs gateway write paths to compare (grant: straight to S3; stream: Put)",
    )
    parser.add_argument("--show-profile", type=Path, help="only print a --profile DIR again")
    args = parser.parse_args()
    for key, value in load_infra_env().items():  # S3 and Kafka endpoints of infra/up.sh
        os.environ.setdefault(key, value)

    if args.show_profile:
        for name in ("gateway", "storage"):
            print_profile(name, args.show_profile / f"{name}.txt")
        return
    files = generate(args.instances)
    size = sum(path.stat().st_size for path in files)
    console.print(
        f"{len(files)} files, {size / 1e6:.0f} MB, {size / len(files) / 1024:.0f} KiB each"
    )
    postgres_url = (
        os.environ.get("PACS_TEST_POSTGRES_URL") if Path(ORTHANC_PG_PLUGIN).exists() else None
    )
    results = measure_series(files, size, args, postgres_url)
    small_results = measure_small_studies(args) if args.small_studies else []
    summary = summarise(results)
    print_table(summary, args.workers, args.rounds)
    if small_results:
        print_table(small_results, args.workers, 1, "many small studies until queryable")
    print_cpu_table(summary, store_floor_ms(size // len(files)))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "workers": args.workers,
                    "runs": [asdict(r) | {"per_second": r.per_second} for r in results],
                    "median": [asdict(r) | {"per_second": r.per_second} for r in summary],
                },
                indent=2,
            )
        )
    if args.profile:
        profile(files, args.workers, args.profile)


def describe(result: Result) -> str:
    return (
        f"{result.target} x {result.associations}: {result.seconds:.2f}s, "
        f"{result.per_second:.1f} inst/s, {result.mb_per_second:.1f} MB/s, "
        f"all findable after {result.findable_seconds:.2f}s"
    )


if __name__ == "__main__":
    sys.exit(main())
