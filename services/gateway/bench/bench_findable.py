"""Acknowledged means findable: the lag from a C-STORE Success to the instance being findable,
at the sustained full rate the stack accepts.

cloudpacs runs as real processes (:class:`pacs_cli.stack.Stack`: storage, indexer, a gateway
with ``--workers`` processes) over the infrastructure of ``infra/up.sh``. ``--associations``
pynetdicom senders store as fast as they are acknowledged for ``--minutes``, in one of two
shapes: ``small-studies`` (one 39 KiB CT_small instance per study) or ``ct-series`` (studies of
``--series-size`` 513 KiB CT slices). Two lags are measured for every run:

* **indexed lag**, for every instance: from its C-STORE Success to the indexer's
  ``InstanceIndexed`` event, which the indexer publishes only after the database commit that
  makes the instance visible to C-FIND (the bench consumes ``pacs.indexed.v1`` and takes the
  event's ``indexed_time``, the indexer's clock on the same machine);
* **C-FIND lag**, for a sample: a prober takes the most recently acknowledged instance, sends
  IMAGE-level C-FINDs for it over its own association until it is returned, and records when.
  Each probe's resolution is one C-FIND round trip.

After the senders stop, the bench waits until every acknowledged instance was indexed and then
counts the studies with one study-level C-FIND: a missing instance fails the run. The CPU of
the stack's processes (and of Kafka and the S3 server) over the run is printed per instance.

    uv run python services/gateway/bench/bench_findable.py [--minutes 10]
        [--shape small-studies|ct-series|both] [--associations 8] [--workers 2]
    (needs infra/up.sh)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from bench_ingest import CloudpacsTarget, ct_slice
from pacs.events.v1 import instance_events_pb2
from pacs_common.events import TOPIC_INDEXED
from pacs_common.kafka_client import kafka_client_options
from pacs_common.local import load_infra_env
from pacs_common.settings import KafkaSettings
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)
from rich.console import Console
from rich.table import Table

console = Console(width=max(Console().width, 120))
SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)


@dataclass
class Run:
    """What one measured run saw."""

    shape: str
    seconds: float = 0.0
    acked: dict[str, float] = field(default_factory=dict)
    """SOP Instance UID -> wall-clock time (epoch seconds) of its C-STORE Success."""
    indexed: dict[str, float] = field(default_factory=dict)
    """SOP Instance UID -> wall-clock time the indexer committed it (the event's
    ``indexed_time``, so a slow reader of the topic does not count as lag)."""
    cfind_lags: list[float] = field(default_factory=list)
    studies: set[str] = field(default_factory=set)
    failures: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


# --------------------------------------------------------------------------------------------
# What is sent


def templates(shape: str, series_size: int) -> Iterator[Dataset]:
    """An endless stream of new instances of ``shape`` (fresh UIDs; pixels reused)."""
    base = dcmread(get_testdata_file("CT_small.dcm"))
    if shape == "ct-series":
        pixels = ct_slice(np.random.default_rng(7), 0, 1)
        base.Rows, base.Columns = pixels.shape
        base.PixelData = pixels.tobytes()
    while True:
        study = generate_uid()
        series = generate_uid()
        for index in range(1 if shape == "small-studies" else series_size):
            ds = base.copy()
            sop = generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.InstanceNumber = index + 1
            yield ds


def sender(
    run: Run, port: int, shape: str, series_size: int, stop: threading.Event, *, seed: int
) -> None:
    """Store instances over one association until ``stop``; record each Success."""
    ae = AE(ae_title=f"BENCH{seed}")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDPACS")
    if not assoc.is_established:
        raise SystemExit(f"sender {seed}: association refused")
    try:
        for ds in templates(shape, series_size):
            if stop.is_set():
                return
            status = assoc.send_c_store(ds)
            now = time.time()
            with run.lock:
                if status and status.Status == SUCCESS:
                    run.acked[ds.SOPInstanceUID] = now
                    run.studies.add(ds.StudyInstanceUID)
                else:
                    run.failures += 1
    finally:
        assoc.release()


def find_scu(port: int) -> tuple[AE, object]:
    ae = AE(ae_title="BENCHFIND")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDPACS")
    if not assoc.is_established:
        raise SystemExit("prober: association refused")
    return ae, assoc


def matches(assoc: object, query: Dataset) -> int:
    """How many matches a C-FIND returns."""
    found = 0
    for status, identifier in assoc.send_c_find(  # type: ignore[attr-defined]
        query, StudyRootQueryRetrieveInformationModelFind
    ):
        if status and status.Status in PENDING and identifier is not None:
            found += 1
    return found


def prober(run: Run, port: int, stop: threading.Event) -> None:
    """Sample the C-FIND lag: the newest acknowledged instance, queried until returned."""
    _, assoc = find_scu(port)
    try:
        while not stop.is_set():
            with run.lock:
                newest = next(reversed(run.acked.items())) if run.acked else None
            if newest is None:
                time.sleep(0.05)
                continue
            sop, acked_at = newest
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.SOPInstanceUID = sop
            query.StudyInstanceUID = ""
            while not stop.is_set() and matches(assoc, query) == 0:
                pass
            if not stop.is_set():
                run.cfind_lags.append(time.time() - acked_at)
            time.sleep(0.2)
    finally:
        assoc.release()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# What is indexed


class IndexedWatcher:
    """Consumes pacs.indexed.v1 from its end in a thread of its own."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._consume()), daemon=True)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            **kafka_client_options(KafkaSettings()),
            group_id=f"bench-findable-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            partitions = None
            while not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(TOPIC_INDEXED)
            assigned = [TopicPartition(TOPIC_INDEXED, p) for p in partitions]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            for tp in assigned:
                await consumer.position(tp)
            self.ready.set()
            while not self.stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                with self.run.lock:
                    for records in batches.values():
                        for record in records:
                            event = instance_events_pb2.InstanceIndexed.FromString(
                                record.value or b""
                            )
                            # Other stacks' events on the shared topic are kept too (the
                            # indexer may commit before the sender has seen its Success).
                            self.run.indexed.setdefault(
                                event.instance.sop_instance_uid, _epoch(event.indexed_time)
                            )
        finally:
            await consumer.stop()


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------------------------


def measure(shape: str, minutes: float, associations: int, workers: int, series_size: int) -> Run:
    run = Run(shape)
    target = CloudpacsTarget(workers)
    with target:
        watcher = IndexedWatcher(run)
        watcher.thread.start()
        if not watcher.ready.wait(60):
            raise SystemExit("could not consume pacs.indexed.v1 (is infra/up.sh running?)")
        meter = target.cpu_meter()
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=sender,
                args=(run, target.dicom_port, shape, series_size, stop),
                kwargs={"seed": n},
            )
            for n in range(associations)
        ]
        threads.append(threading.Thread(target=prober, args=(run, target.dicom_port, stop)))
        meter.start()
        started = time.monotonic()
        for thread in threads:
            thread.start()
        deadline = started + minutes * 60
        while time.monotonic() < deadline:
            time.sleep(min(10.0, max(deadline - time.monotonic(), 0)))
            with run.lock:
                acked = len(run.acked)
                indexed = sum(1 for sop in run.acked if sop in run.indexed)
            console.print(
                f"  {shape}: {time.monotonic() - started:5.0f} s, {acked} acknowledged, "
                f"{indexed} indexed"
            )
        stop.set()
        for thread in threads:
            thread.join()
        run.seconds = time.monotonic() - started
        catch_up = time.monotonic() + 120
        while time.monotonic() < catch_up:
            with run.lock:
                missing = set(run.acked) - set(run.indexed)
            if not missing:
                break
            time.sleep(0.2)
        run.cpu = meter.stop()
        watcher.stop.set()
        watcher.thread.join()
        if missing:
            raise SystemExit(f"FAIL: {len(missing)} acknowledged instances never indexed")
        _, assoc = find_scu(target.dicom_port)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        found = matches(assoc, query)
        assoc.release()  # type: ignore[attr-defined]
        if found < len(run.studies):
            raise SystemExit(f"FAIL: C-FIND returns {found} studies, {len(run.studies)} stored")
    return run


def percentiles(values: list[float]) -> list[str]:
    if not values:
        return ["-"] * 5
    points = np.percentile(np.array(values) * 1000, [50, 90, 99, 100])
    return [str(len(values)), *(f"{p:.0f}" for p in points)]


def print_tables(runs: list[Run], associations: int, workers: int) -> None:
    table = Table(
        title=f"Acknowledged -> findable, {associations} associations at full rate, "
        f"{workers} gateway workers (ms)"
    )
    for column in ("shape", "lag", "instances", "p50", "p90", "p99", "max"):
        table.add_column(column, justify="right")
    for run in runs:
        indexed = [run.indexed[sop] - acked for sop, acked in run.acked.items()]
        table.add_row(run.shape, "indexed (all)", *percentiles(indexed))
        table.add_row(run.shape, "C-FIND (probed)", *percentiles(run.cfind_lags))
    console.print(table)
    rates = Table(title="Throughput and CPU over the same runs")
    for column in ("shape", "minutes", "instances/s", "failed", "CPU ms/instance by process"):
        rates.add_column(column, justify="right")
    for run in runs:
        count = max(len(run.acked), 1)
        cpu = ", ".join(f"{name} {seconds * 1000 / count:.1f}" for name, seconds in run.cpu.items())
        rates.add_row(
            run.shape,
            f"{run.seconds / 60:.1f}",
            f"{len(run.acked) / run.seconds:.1f}",
            str(run.failures),
            cpu,
        )
    console.print(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--shape", choices=("small-studies", "ct-series", "both"), default="both")
    parser.add_argument("--associations", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--series-size", type=int, default=100)
    args = parser.parse_args()
    for key, value in load_infra_env().items():  # S3 and Kafka endpoints of infra/up.sh
        os.environ.setdefault(key, value)
    shapes = ["small-studies", "ct-series"] if args.shape == "both" else [args.shape]
    runs = [
        measure(shape, args.minutes, args.associations, args.workers, args.series_size)
        for shape in shapes
    ]
    print_tables(runs, args.associations, args.workers)


if __name__ == "__main__":
    main()
