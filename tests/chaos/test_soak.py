"""Soak: mixed C-STORE / C-FIND / C-GET against the whole stack for a while, at about half
the measured ingest capacity (docs/performance.md: 40-85 instances/s on 2 cores, so 20/s),
with the memory of every service process sampled and printed as a table. No operation may
end with an error status, and no process may keep growing.

Size: ``PACS_SOAK_SECONDS`` (20 in CI at 10 stores/s; ``make soak`` runs 1 800 s at 20/s,
``PACS_SOAK_STORES_PER_S``). "Flat" means: the last sample is within 25 % + 64 MiB of the
sample taken a third into the run (start-up allocations and caches filling up come first).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import psutil
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from tests.chaos.chaos_support import ACKNOWLEDGED, synthetic_instances
from tests.e2e.e2e_support import RunningStack

pytestmark = pytest.mark.e2e

SECONDS = float(os.environ.get("PACS_SOAK_SECONDS", "20"))
STORES_PER_S = float(os.environ.get("PACS_SOAK_STORES_PER_S", "10"))
SAMPLES = 10


def _rss_mib(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 1024**2


class Load:
    """The three kinds of work, each in a thread, counting operations and errors."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.counts = {"C-STORE": 0, "C-FIND": 0, "C-GET": 0}
        self.errors: list[str] = []
        self.stored: list[Dataset] = []
        self._instances = synthetic_instances(2000, studies=20)

    def _ae(self, *contexts: str) -> AE:
        ae = AE(ae_title="SOAKSCU")
        for context in contexts:
            ae.add_requested_context(context, ExplicitVRLittleEndian)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        return ae

    def stores(self) -> None:
        ae = self._ae(SecondaryCaptureImageStorage)
        index = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            assoc = ae.associate("127.0.0.1", self.port, ae_title="CLOUDPACS")
            if not assoc.is_established:
                self.errors.append("C-STORE association refused")
                time.sleep(1)
                continue
            for _ in range(10):
                dataset = self._instances[index % len(self._instances)]
                index += 1
                next_at += 1 / STORES_PER_S
                time.sleep(max(0.0, next_at - time.monotonic()))
                status = assoc.send_c_store(dataset)
                code = int(status.Status) if "Status" in status else None
                if code not in ACKNOWLEDGED:
                    self.errors.append(f"C-STORE status {code}")
                self.counts["C-STORE"] += 1
                self.stored.append(dataset)
            assoc.release()

    def finds(self) -> None:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        while not self.stop.wait(1.0):
            assoc = ae.associate("127.0.0.1", self.port, ae_title="CLOUDPACS")
            if not assoc.is_established:
                self.errors.append("C-FIND association refused")
                continue
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = ""
            identifier.PatientID = ""
            for status, _ in assoc.send_c_find(
                identifier, StudyRootQueryRetrieveInformationModelFind
            ):
                code = int(status.Status) if status is not None and "Status" in status else None
                if code not in (0x0000, 0xFF00, 0xFF01):
                    self.errors.append(f"C-FIND status {code}")
            self.counts["C-FIND"] += 1
            assoc.release()

    def gets(self) -> None:
        ae = self._ae(SecondaryCaptureImageStorage)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        role = build_role(SecondaryCaptureImageStorage, scp_role=True)
        handlers = [(evt.EVT_C_STORE, lambda event: 0x0000)]
        while not self.stop.wait(2.0):
            if len(self.stored) < 20:
                continue  # give the indexer something to find first
            dataset = self.stored[-20]
            assoc = ae.associate(
                "127.0.0.1",
                self.port,
                ae_title="CLOUDPACS",
                ext_neg=[role],
                evt_handlers=handlers,
            )
            if not assoc.is_established:
                self.errors.append("C-GET association refused")
                continue
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "IMAGE"
            identifier.StudyInstanceUID = dataset.StudyInstanceUID
            identifier.SeriesInstanceUID = dataset.SeriesInstanceUID
            identifier.SOPInstanceUID = dataset.SOPInstanceUID
            final = None
            for status, _ in assoc.send_c_get(
                identifier, StudyRootQueryRetrieveInformationModelGet
            ):
                if status is not None and "Status" in status:
                    final = int(status.Status)
            if final not in (0x0000, 0xFF00):
                self.errors.append(f"C-GET status {final}")
            self.counts["C-GET"] += 1
            assoc.release()


def test_mixed_load_keeps_memory_flat_and_answers_without_errors(
    e2e_stack_workers: RunningStack,
) -> None:
    load = Load(e2e_stack_workers.dicom_port)
    threads = [
        threading.Thread(target=work, daemon=True) for work in (load.stores, load.finds, load.gets)
    ]
    for thread in threads:
        thread.start()
    names = ["storage", "indexer", "gateway"]
    pids = {name: e2e_stack_workers.stack.process(name).pid() for name in names}
    samples: list[tuple[float, dict[str, float]]] = []
    started = time.monotonic()
    for index in range(SAMPLES + 1):
        time.sleep(max(0.0, started + index * SECONDS / SAMPLES - time.monotonic()))
        samples.append((time.monotonic() - started, {n: _rss_mib(p) for n, p in pids.items() if p}))
    load.stop.set()
    for thread in threads:
        thread.join(120)

    print("\n| elapsed s | " + " | ".join(f"{n} RSS MiB" for n in names) + " |")  # the table
    print("|---|" + "---|" * len(names))
    for elapsed, rss in samples:
        print(f"| {elapsed:.0f} | " + " | ".join(f"{rss.get(n, 0):.0f}" for n in names) + " |")
    print(f"operations: {load.counts}; errors: {len(load.errors)}")

    assert not load.errors, load.errors[:10]
    assert all(load.counts.values()), load.counts
    third = samples[len(samples) // 3][1]
    last = samples[-1][1]
    for name in names:
        assert last[name] <= third[name] * 1.25 + 64, (name, third[name], last[name])
