"""Support of the chaos and rolling-restart suites: synthetic instances, senders that retry
what was not acknowledged, faults (``kill -9`` of a service or of an infrastructure server,
then its restart) and the final check (found by C-FIND, retrieved bit-exact, none twice)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from pacs.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.local import REPO, sync_channel
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.e2e.e2e_support import RunningStack, infra_script

ACKNOWLEDGED = (0x0000, 0xB000)
"""Statuses after which the sender may delete its copy (success; stored as a new version)."""


def synthetic_instances(count: int, studies: int = 4) -> list[Dataset]:
    """``count`` small Secondary Capture instances with distinct pixels over ``studies``."""
    study_uids = [generate_uid() for _ in range(studies)]
    series_uids = [generate_uid() for _ in range(studies)]
    rng = np.random.default_rng(17)
    instances = []
    for index in range(count):
        dataset = Dataset()
        dataset.SOPClassUID = SecondaryCaptureImageStorage
        dataset.SOPInstanceUID = generate_uid()
        dataset.StudyInstanceUID = study_uids[index % studies]
        dataset.SeriesInstanceUID = series_uids[index % studies]
        dataset.PatientID = f"CHAOS{index % studies}"
        dataset.PatientName = "Chaos^Test"
        dataset.Modality = "OT"
        dataset.InstanceNumber = index + 1
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.Rows = dataset.Columns = 64
        dataset.BitsAllocated = dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 0
        dataset.PixelData = rng.integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        instances.append(dataset)
    return instances


def dataset_bytes(dataset: Dataset) -> bytes:
    """The data set as the sender encodes it on the wire (explicit VR little endian)."""
    encoded = encode(dataset, False, True)
    assert encoded is not None
    return encoded


@dataclass
class Ledger:
    """What the senders got acknowledged, and how often the gateway refused or failed."""

    acknowledged: dict[str, Dataset] = field(default_factory=dict)
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, dataset: Dataset) -> None:
        with self.lock:
            self.acknowledged[str(dataset.SOPInstanceUID)] = dataset

    def fail(self) -> None:
        with self.lock:
            self.failures += 1


def send_all(port: int, instances: list[Dataset], ledger: Ledger, deadline: float) -> None:
    """One sender's association(s): each instance is sent until acknowledged; a refusal, an
    abort or a lost connection means a new association and the same instance again."""
    pending = list(instances)
    ae = AE(ae_title="CHAOSSCU")
    ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    while pending and time.monotonic() < deadline:
        assoc = None
        with contextlib.suppress(Exception):
            assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDPACS")
        if assoc is None or not assoc.is_established:
            ledger.fail()
            time.sleep(0.5)
            continue
        try:
            while pending and assoc.is_established:
                status = assoc.send_c_store(pending[0])
                code = int(status.Status) if "Status" in status else None
                if code in ACKNOWLEDGED:
                    ledger.ack(pending.pop(0))
                else:
                    ledger.fail()
                    time.sleep(0.5)
                    break
        except Exception:
            ledger.fail()
        finally:
            with contextlib.suppress(Exception):
                assoc.release() if assoc.is_established else assoc.abort()
    assert not pending, f"{len(pending)} instances never acknowledged before the deadline"


def run_senders(
    port: int, instances: list[Dataset], associations: int, ledger: Ledger, within_s: float
) -> list[threading.Thread]:
    """Start ``associations`` senders over disjoint shares of ``instances``."""
    deadline = time.monotonic() + within_s
    errors: list[BaseException] = []

    def sender(share: list[Dataset]) -> None:
        try:
            send_all(port, share, ledger, deadline)
        except BaseException as exc:  # reported by the caller through .errors
            errors.append(exc)

    threads = [
        threading.Thread(target=sender, args=(instances[i::associations],), daemon=True)
        for i in range(associations)
    ]
    for thread in threads:
        thread.errors = errors  # type: ignore[attr-defined]
        thread.start()
    return threads


def join_senders(threads: list[threading.Thread], timeout_s: float) -> None:
    for thread in threads:
        thread.join(timeout_s)
    errors = getattr(threads[0], "errors", []) if threads else []
    assert not errors, errors


def kill_service(stack: RunningStack, name: str) -> None:
    """``kill -9`` one service process (the gateway's workers die with it), then restart it
    and wait until it is ready."""
    process = stack.stack.process(name)
    pid = process.pid()
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    while process.pid() is not None:
        time.sleep(0.1)
    process.start(stack.stack.config.service_env())
    process.wait_ready(180)


def _pid_of(path: Path) -> int:
    return int(path.read_text().split()[0])


INFRA_PIDS: dict[str, Callable[[], int]] = {
    "kafka": lambda: _pid_of(REPO / ".cache/run/kafka/kafka.pid"),
    "s3": lambda: _pid_of(REPO / ".cache/run/s3/s3.pid"),
    "postgres": lambda: _pid_of(REPO / ".cache/run/postgres/data/postmaster.pid"),
}


def kill_infra(name: str) -> None:
    """``kill -9`` the broker, the S3 server or PostgreSQL, then start it again."""
    pid = INFRA_PIDS[name]()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    infra_script(name, "start")


def _find(port: int, identifier: Dataset) -> list[Dataset]:
    ae = AE(ae_title="CHAOSSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        return [
            ds
            for status, ds in assoc.send_c_find(
                identifier, StudyRootQueryRetrieveInformationModelFind
            )
            if status is not None and int(status.Status) in (0xFF00, 0xFF01) and ds is not None
        ]
    finally:
        assoc.release()


def found_by_c_find(port: int, studies: set[str]) -> list[str]:
    """Every SOP Instance UID C-FIND finds in ``studies`` (IMAGE level), duplicates kept."""
    found = []
    for study in studies:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.StudyInstanceUID = study
        identifier.SeriesInstanceUID = ""
        identifier.SOPInstanceUID = ""
        found += [str(ds.SOPInstanceUID) for ds in _find(port, identifier)]
    return found


def _ref_of(stack: RunningStack, dataset: Dataset) -> instance_pb2.InstanceRef:
    """The address of a sent instance in the stack's tenant."""
    return instance_pb2.InstanceRef(
        tenant=stack.tenant,
        study_instance_uid=str(dataset.StudyInstanceUID),
        series_instance_uid=str(dataset.SeriesInstanceUID),
        sop_instance_uid=str(dataset.SOPInstanceUID),
    )


def _where_they_are(stack: RunningStack, instances: dict[str, Dataset]) -> str:
    """Which of ``instances`` storage holds (then the index lost them) and which it does not
    (then an acknowledged write was lost): what a failure report needs to say."""
    stored, absent = [], []
    with sync_channel(f"127.0.0.1:{stack.storage_port}") as channel:
        storage = storage_service_pb2_grpc.StorageServiceStub(channel)
        for uid, dataset in instances.items():
            ref = _ref_of(stack, dataset)
            try:
                head = storage.Head(storage_service_pb2.HeadRequest(instance=ref), timeout=30)
                stored.append(f"{uid} (stored {head.object.stored_time})")
            except grpc.RpcError as exc:
                absent.append(f"{uid} ({exc.code().name})")
    return f"in storage but not indexed: {stored}; not in storage: {absent}"


def check_everything_acknowledged(stack: RunningStack, ledger: Ledger, within_s: float) -> None:
    """Every acknowledged instance is found by C-FIND exactly once and its stored bytes carry
    exactly the data set that was sent."""
    acknowledged = ledger.acknowledged
    studies = {str(ds.StudyInstanceUID) for ds in acknowledged.values()}
    deadline = time.monotonic() + within_s
    while True:
        found = found_by_c_find(stack.dicom_port, studies)
        if set(acknowledged) <= set(found) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    missing = set(acknowledged) - set(found)
    assert not missing, (
        f"{len(missing)} acknowledged instances not found by C-FIND: "
        + _where_they_are(stack, {uid: acknowledged[uid] for uid in missing})
    )
    twice = {uid for uid in found if found.count(uid) > 1}
    assert not twice, f"{len(twice)} instances found more than once"
    with sync_channel(f"127.0.0.1:{stack.storage_port}") as channel:
        storage = storage_service_pb2_grpc.StorageServiceStub(channel)
        for uid, dataset in acknowledged.items():
            ref = _ref_of(stack, dataset)
            stored = b"".join(
                r.chunk
                for r in storage.Get(storage_service_pb2.GetRequest(instance=ref), timeout=60)
            )
            assert stored.endswith(dataset_bytes(dataset)), f"{uid} not stored bit-exact"
