"""Rolling restart: the gateway's processes replaced one by one while a sender runs, as a
Deployment's rolling update does with pods. A second gateway joins the DICOM port
(SO_REUSEPORT), the first one stops gracefully (SIGTERM: it stops accepting, lets its
associations finish within the shutdown budget), comes back, and the second one leaves the
same way. No C-STORE may fail.

What counts as a failed C-STORE: a C-STORE request answered with a status other than success
(or the 0xB000 warning), or an association aborted with C-STOREs in flight. A connection
attempt refused at the TCP level while a listener closes (the kernel resets what was queued on
a closed SO_REUSEPORT socket) is not one: the sender retries its association, as a modality
does, and the count of those is printed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest
from pacs_cli.stack import ServiceProcess, ServiceSpec, grpc_serving
from pacs_common.local import free_port
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage

from tests.chaos.chaos_support import ACKNOWLEDGED, synthetic_instances
from tests.e2e.e2e_support import RunningStack

pytestmark = pytest.mark.e2e

ROUNDS = int(os.environ.get("PACS_ROLLING_ROUNDS", "1"))


class Sender:
    """Associations of five C-STOREs each, one after another, until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.instances = synthetic_instances(400)
        self.sent = 0
        self.failed_stores = 0
        self.refused_associations = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        ae = AE(ae_title="ROLLSCU")
        ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
        index = 0
        while not self._stop.is_set():
            assoc = None
            with contextlib.suppress(Exception):
                assoc = ae.associate("127.0.0.1", self.port, ae_title="CLOUDPACS")
            if assoc is None or not assoc.is_established:
                self.refused_associations += 1
                time.sleep(0.2)
                continue
            for _ in range(5):
                dataset = self.instances[index % len(self.instances)]
                index += 1
                try:
                    status = assoc.send_c_store(dataset)
                except Exception:
                    self.failed_stores += 1
                    break
                code = int(status.Status) if "Status" in status else None
                if code in ACKNOWLEDGED:
                    self.sent += 1
                else:
                    self.failed_stores += 1
                    break
            with contextlib.suppress(Exception):
                assoc.release() if assoc.is_established else assoc.abort()


def _second_gateway(stack: RunningStack) -> ServiceProcess:
    spec = ServiceSpec("gateway-b", "pacs_gateway", free_port(), {"dicom": stack.dicom_port})
    return ServiceProcess(spec, stack.run_dir)


def _replace(stack: RunningStack, sender: Sender) -> None:
    env = stack.stack.config.service_env()
    first = stack.stack.process("gateway")
    second = _second_gateway(stack)
    second.start({**env, "PACS_GATEWAY_GRPC_PORT": str(second.spec.grpc_port)})
    second.wait_ready(180)
    before = sender.sent
    first.stop(timeout_s=60)  # SIGTERM: graceful
    first.start(env)
    first.wait_ready(180)
    assert grpc_serving(stack.gateway_port)
    second.stop(timeout_s=60)
    assert sender.sent > before, "nothing was stored while the processes were replaced"


def test_a_rolling_restart_fails_no_c_store(e2e_stack_workers: RunningStack) -> None:
    sender = Sender(e2e_stack_workers.dicom_port)
    sender.start()
    try:
        for _ in range(ROUNDS):
            _replace(e2e_stack_workers, sender)
        time.sleep(2)
    finally:
        sender.stop()
    print(  # the figures of the run, in the log
        f"\nrolling restart: {sender.sent} C-STOREs acknowledged, {sender.failed_stores} failed, "
        f"{sender.refused_associations} association attempts refused and retried"
    )
    assert sender.failed_stores == 0
