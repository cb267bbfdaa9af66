"""DICOMweb benchmark: cloudpacs' DICOMweb service side by side with Orthanc's DICOMweb plugin
on the same data (issue 15's four figures).

* cloudpacs runs as real processes (:class:`pacs_cli.stack.Stack`: storage, indexer, gateway,
  dicomweb) on a fresh bucket over the infrastructure of ``infra/up.sh``; the data is put
  through storage (as C-STORE does) and indexed from Kafka before timing starts.
* Orthanc (Debian 1.10 + ``orthanc-dicomweb`` 1.7, :class:`pacs_testkit.orthanc.
  OrthancDicomweb`, metadata mode ``Full``) gets the same files through its REST API.

Measured, each against both servers with the same HTTP requests (``requests``, one client
thread, keep-alive):

1. QIDO-RS study search, the request OHIF's study list sends (``PatientName=*x*``,
   ``includefield``, ``limit=101``), over ``--studies`` one-instance studies: p50/p95.
2. WADO-RS series metadata of one ``--series-size``-instance series: p50.
3. WADO-RS retrieval of that whole study, ``transfer-syntax=*``: MB/s.
4. Frames of a ``--frames``-frame 512x512 16-bit object, one request per frame as
   Cornerstone sends them: frames/s.

CPU seconds per request are summed over the server's processes (cloudpacs: dicomweb, indexer,
storage and the infrastructure's S3 server; Orthanc: its one process).

    uv run python services/dicomweb/bench/bench_dicomweb.py [--studies N] [--series-size N]
        [--frames N] [--repeat N]
    (needs infra/up.sh and Debian orthanc-dicomweb; the issue's full size is --studies 10000)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pydicom
import requests
from pacs_cli.stack import Stack, StackConfig
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.grpc_client import open_channel
from pacs_common.local import free_port, load_infra_env
from pacs_common.settings import KafkaSettings
from pacs_common.tls import TlsSettings
from pacs_testkit.kafka import group_at_end_of_topic
from pacs_testkit.orthanc import OrthancDicomweb
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from rich.console import Console
from rich.table import Table

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
JSON = {"Accept": "application/dicom+json"}
CORNERSTONE = "multipart/related; type=application/octet-stream; transfer-syntax=*"
STUDY_LIST = {
    "limit": "101",
    "offset": "0",
    "fuzzymatching": "false",
    "includefield": "00081030,00080060,00080090,00100030",
}


def _part10(dataset: Dataset) -> bytes:
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def make_data(
    studies: int, series_size: int, frames: int
) -> tuple[list[bytes], str, str, tuple[str, str, str]]:
    """``studies`` one-instance studies, one study of ``series_size`` instances, one
    multi-frame object; returns the objects and the UIDs the requests address."""
    template = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    objects = []

    def instance(patient: str, study: str, series: str, number: int) -> bytes:
        dataset = template.copy()
        dataset.PatientName, dataset.PatientID = patient, patient.replace("^", "")
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = number
        return _part10(dataset)

    for index in range(studies):
        objects.append(instance(f"PAT{index:05d}^BENCH", generate_uid(), generate_uid(), 1))
    big_study, big_series = generate_uid(), generate_uid()
    objects += [instance("BIG^SERIES", big_study, big_series, n + 1) for n in range(series_size)]
    multi = template.copy()
    multi.StudyInstanceUID, multi.SeriesInstanceUID = generate_uid(), generate_uid()
    multi.SOPInstanceUID = generate_uid()
    multi.file_meta.MediaStorageSOPInstanceUID = multi.SOPInstanceUID
    multi.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pixels = np.random.default_rng(0).integers(0, 4000, (frames, 512, 512), dtype=np.uint16)
    multi.Rows = multi.Columns = 512
    multi.NumberOfFrames = frames
    multi.BitsAllocated, multi.BitsStored, multi.HighBit, multi.PixelRepresentation = 16, 12, 11, 0
    multi.PixelData = pixels.tobytes()
    multi["PixelData"].VR = "OW"
    objects.append(_part10(multi))
    return (
        objects,
        big_study,
        big_series,
        (multi.StudyInstanceUID, multi.SeriesInstanceUID, multi.SOPInstanceUID),
    )


@dataclass
class Server:
    """One server under test: its DICOMweb root and the processes whose CPU counts."""

    name: str
    root: str
    pids: list[int]

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total


def timed(
    server: Server, repeat: int, call: Callable[[int], int]
) -> tuple[list[float], float, int]:
    """Latencies of ``repeat`` calls, CPU seconds per call, bytes received in total."""
    session_cpu = server.cpu()
    latencies, received = [], 0
    for index in range(repeat):
        started = time.perf_counter()
        received += call(index)
        latencies.append(time.perf_counter() - started)
    return latencies, (server.cpu() - session_cpu) / repeat, received


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def run(
    server: Server, args: argparse.Namespace, big: tuple[str, str], multi: tuple[str, str, str]
) -> dict[str, str]:
    http = requests.Session()
    root = server.root

    def qido(index: int) -> int:
        # Exact PatientID: Orthanc 1.10 + plugin 1.7 found nothing for wildcard PatientName or
        # PatientID queries on this data (checked by hand), so both get the query both answer.
        params = {**STUDY_LIST, "PatientID": f"PAT{(index * 7919) % args.studies:05d}BENCH"}
        reply = http.get(f"{root}/studies", params=params, headers=JSON, timeout=60)
        reply.raise_for_status()
        assert len(reply.json()) == 1, (server.name, reply.text[:200])
        return len(reply.content)

    def study_list(_: int) -> int:
        # OHIF's study list without a filter: the first 101 studies.
        reply = http.get(f"{root}/studies", params=STUDY_LIST, headers=JSON, timeout=60)
        reply.raise_for_status()
        assert len(reply.json()) == 101, (server.name, len(reply.json()))
        return len(reply.content)

    def metadata(_: int) -> int:
        reply = http.get(f"{root}/studies/{big[0]}/series/{big[1]}/metadata", timeout=120)
        reply.raise_for_status()
        assert len(reply.json()) == args.series_size
        return len(reply.content)

    def study(_: int) -> int:
        reply = http.get(
            f"{root}/studies/{big[0]}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            timeout=600,
            stream=True,
        )
        reply.raise_for_status()
        return sum(len(chunk) for chunk in reply.iter_content(1 << 20))

    def frame(index: int) -> int:
        number = index % args.frames + 1
        reply = http.get(
            f"{root}/studies/{multi[0]}/series/{multi[1]}/instances/{multi[2]}/frames/{number}",
            headers={"Accept": CORNERSTONE},
            timeout=120,
        )
        reply.raise_for_status()
        return len(reply.content)

    qido(0), metadata(0), frame(0)  # warm caches and connections on both sides
    q_lat, q_cpu, _ = timed(server, args.repeat, qido)
    l_lat, l_cpu, _ = timed(server, max(args.repeat // 2, 5), study_list)
    m_lat, m_cpu, _ = timed(server, max(args.repeat // 5, 3), metadata)
    s_lat, s_cpu, s_bytes = timed(server, 3, study)
    f_lat, f_cpu, _ = timed(server, args.frames, frame)
    return {
        "qido PatientID p50 ms": f"{pct(q_lat, 50):.1f}",
        "qido PatientID p95 ms": f"{pct(q_lat, 95):.1f}",
        "qido CPU ms/req": f"{q_cpu * 1000:.1f}",
        "study list (101) p50 ms": f"{pct(l_lat, 50):.1f}",
        "study list (101) p95 ms": f"{pct(l_lat, 95):.1f}",
        "study list CPU ms/req": f"{l_cpu * 1000:.1f}",
        "metadata p50 ms": f"{pct(m_lat, 50):.0f}",
        "metadata CPU ms/req": f"{m_cpu * 1000:.0f}",
        "study MB/s": f"{s_bytes / sum(s_lat) / 1e6:.1f}",
        "study CPU s/GB": f"{s_cpu * 3 / (s_bytes / 1e9):.1f}",
        "frames/s": f"{len(f_lat) / sum(f_lat):.1f}",
        "frame CPU ms": f"{f_cpu * 1000:.1f}",
    }


async def load_cloudpacs(storage_port: int, objects: list[bytes], tenant: str) -> None:
    channel = open_channel(f"127.0.0.1:{storage_port}", TlsSettings().as_identity("cli"))
    storage = StorageClient(channel, timeout=120)
    queue = list(objects)

    async def worker() -> None:
        while queue:
            data = queue.pop()
            await storage.put(instance_ref_of(data, tenant), data)

    await asyncio.gather(*(worker() for _ in range(8)))
    await channel.close()


def wait_indexed(root: str, expected_studies: int) -> None:
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        reply = requests.get(f"{root}/studies", params={"limit": "1"}, timeout=60)
        if reply.ok and int(reply.headers.get("X-Total-Count", "0")) >= expected_studies:
            return
        time.sleep(1)
    raise SystemExit("FAIL: cloudpacs did not index everything in time")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--studies", type=int, default=500, help="one-instance studies (issue: 10000)"
    )
    parser.add_argument("--series-size", type=int, default=500)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=100, help="QIDO requests per server")
    args = parser.parse_args()
    console = Console()
    objects, big_study, big_series, multi = make_data(args.studies, args.series_size, args.frames)
    console.print(f"data: {len(objects)} instances, {sum(map(len, objects)) / 1e6:.0f} MB")
    results: dict[str, dict[str, str]] = {}
    infra = load_infra_env()
    for key, value in infra.items():
        os.environ.setdefault(key, value)
    with tempfile.TemporaryDirectory(prefix="bench-dicomweb-") as run_dir:
        group = f"bench-dw-{uuid.uuid4().hex[:8]}"
        asyncio.run(group_at_end_of_topic(group, KafkaSettings()))
        config = StackConfig(
            run_dir=Path(run_dir),
            storage_port=free_port(),
            indexer_port=free_port(),
            gateway_port=free_port(),
            dicom_port=free_port(),
            dicomweb_port=free_port(),
            dicomweb_grpc_port=free_port(),
            env={
                "PACS_S3_BUCKET": f"bench-dw-{uuid.uuid4().hex[:12]}",
                "PACS_INDEXER_CONSUMER_GROUP": group,
            },
        )
        stack = Stack(config)
        stack.start(timeout_s=120)
        try:
            root = f"http://127.0.0.1:{config.dicomweb_port}/dicomweb"
            started = time.monotonic()
            asyncio.run(load_cloudpacs(config.storage_port, objects, "default"))
            wait_indexed(root, args.studies + 2)
            console.print(f"cloudpacs loaded and indexed in {time.monotonic() - started:.0f} s")
            pids = [p.pid() or 0 for p in stack.processes if p.spec.name != "gateway"]
            pids += [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "versitygw"]
            results["cloudpacs"] = run(
                Server("cloudpacs", root, pids), args, (big_study, big_series), multi
            )
        finally:
            stack.stop()
    with OrthancDicomweb() as orthanc:
        started = time.monotonic()
        for data in objects:
            orthanc.upload(data)
        console.print(f"Orthanc loaded in {time.monotonic() - started:.0f} s")
        assert orthanc.process is not None
        results["Orthanc"] = run(
            Server("Orthanc", orthanc.dicomweb_url, [orthanc.process.pid]),
            args,
            (big_study, big_series),
            multi,
        )
    table = Table(
        title=f"DICOMweb: {args.studies} studies, a {args.series_size}-instance series, "
        f"{args.frames} frames of 512x512x16 bit"
    )
    table.add_column("figure")
    for name in results:
        table.add_column(name, justify="right")
    table.add_column("cloudpacs / Orthanc", justify="right")
    for figure in results["cloudpacs"]:
        ours, theirs = float(results["cloudpacs"][figure]), float(results["Orthanc"][figure])
        table.add_row(
            figure,
            results["cloudpacs"][figure],
            results["Orthanc"][figure],
            f"{ours / theirs:.2f}" if theirs else "-",
        )
    console.print(table)
    console.print(
        "Bounds: one client thread; QIDO and metadata are bound by the indexer's query "
        "and the gRPC hop, study retrieval by storage's Get per instance (a Python gRPC "
        "relay of verified S3 reads), frames by one storage Head per request plus slicing "
        "the cached object. The machine is shared and loaded: compare ratios, not absolute "
        "figures."
    )


if __name__ == "__main__":
    main()
