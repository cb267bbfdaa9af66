"""Several receiving processes sharing the DICOM port(s) with SO_REUSEPORT.

pynetdicom runs one thread per association, and Python threads share one interpreter lock, so
a single process does not scale with parallel senders (measured: fewer instances/s over eight
associations than over one). The kernel spreads new connections over every socket bound to the
same port with SO_REUSEPORT, so ``workers`` processes each run a whole gateway on the same
DICOM port(s). The first one also serves IngestService; the others only DIMSE. The first
process supervises the others and restarts any that dies.

A worker dies with the first process, however that one ends: each worker asks the kernel for
SIGKILL when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so a ``kill -9`` of the
first process cannot leave a worker serving the port beside a restarted gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from pacs_common.logging import configure_logging
from pacs_common.metrics import MULTIPROC_DIR_ENV
from pacs_common.telemetry import configure_tracing

from pacs_gateway.app import create_app
from pacs_gateway.peer_limits import SharedTable, clear_slot, new_table
from pacs_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

SUPERVISE_INTERVAL_S = 1.0
EXIT_MARGIN_S = 3.0
"""Time past the shutdown grace a process gets to exit (close channels, flush) before SIGKILL."""
PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal this process gets when its parent dies (linux/prctl.h)."""


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies; exit now if it already did.

    The death signal fires when the thread that created this process ends, so workers are
    started from the first process's main thread (its event loop), which lives as long as it.
    The parent may die between the fork and the ``prctl``: then this process was already
    reparented and no signal will come, so the parent's pid is checked right after.

    Raises:
        OSError: ``prctl`` failed (not Linux, or refused).
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent is gone already; nothing must be served without it


def _worker_main(
    values: dict[str, Any], parent_pid: int, peer_table: SharedTable, slot: int
) -> None:
    """Entry point of an extra worker process (spawned, so it starts from a clean state);
    ``peer_table`` is the pod's shared peer-limit counters, ``slot`` this worker's row."""
    die_with_parent(parent_pid)
    settings = GatewaySettings(**values)
    configure_logging(settings.service_name, settings.log_level, settings.log_patient_data)
    configure_tracing(settings.service_name)
    asyncio.run(_serve_one(settings, peer_table, slot))


async def _serve_one(
    settings: GatewaySettings, peer_table: SharedTable | None = None, slot: int = 0
) -> None:
    app = create_app(settings, peer_table, slot)
    await app.start()
    await _until_signalled()
    await app.stop()


async def _until_signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run(settings: GatewaySettings) -> None:
    """Run the gateway with ``settings.workers`` processes until SIGTERM/SIGINT."""
    configure_logging(settings.service_name, settings.log_level, settings.log_patient_data)
    configure_tracing(settings.service_name)
    if settings.workers <= 1:
        await _serve_one(settings)
        return
    _prepare_multiprocess_metrics(settings)
    context = multiprocessing.get_context("spawn")
    # The pod's peer limits, shared by every process: row 0 is the primary's, row i worker i's.
    table = new_table(settings.workers, context.RawArray)
    primary = create_app(settings.model_copy(update={"reuse_port": True}), table, 0)
    await primary.start()
    # Extra workers bind the ports the first one got (which matters when they were 0).
    extra = settings.model_copy(
        update={
            "reuse_port": True,
            "serve_grpc": False,
            "workers": 1,
            "dicom_port": primary.dicom_port,
            "tls_port": primary.tls_port,
        }
    ).model_dump(mode="json")
    children: list[BaseProcess] = []

    def spawn(slot: int) -> BaseProcess:
        clear_slot(table, slot)  # a dead predecessor's connections are gone with it
        child = context.Process(
            target=_worker_main,
            args=(extra, os.getpid(), table, slot),
            name="gateway-worker",
        )
        child.start()
        return child

    children = [spawn(slot) for slot in range(1, settings.workers)]
    log.info("gateway workers started", extra={"workers": settings.workers})
    supervisor = asyncio.create_task(_supervise(children, spawn))
    await _until_signalled()
    supervisor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await supervisor
    await _stop_all(primary, children, settings.shutdown_grace_s)


async def _stop_all(primary: Any, children: list[BaseProcess], grace_s: float) -> None:
    """Stop every process within one shutdown budget: the workers get SIGTERM and drain
    side by side with the primary (each under the same ``shutdown_grace_s``, counted from
    the same moment), and whatever is still running when the budget is spent is killed.
    The whole stop thus takes ``shutdown_grace_s`` plus a few seconds of process exit, never
    a multiple of it (the chart's terminationGracePeriodSeconds is derived from it)."""
    deadline = time.monotonic() + grace_s + EXIT_MARGIN_S
    for child in children:
        child.terminate()  # SIGTERM: each worker shuts down gracefully, all at once
    joined = asyncio.to_thread(_join_all, children, deadline)
    await asyncio.gather(primary.stop(), joined)


def _prepare_multiprocess_metrics(settings: GatewaySettings) -> None:
    """Clear PROMETHEUS_MULTIPROC_DIR of earlier runs' files so /metrics adds up this run's
    workers only (this process's own files, created at import, stay).

    The variable must be in the environment before the process starts (prometheus_client
    chooses its storage when imported); without it, /metrics shows the first worker's values.
    """
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if settings.metrics_port is None:
        return
    if not directory:
        log.warning(
            "several workers but PROMETHEUS_MULTIPROC_DIR is not set: "
            "/metrics only counts the first worker"
        )
        return
    mine = f"_{os.getpid()}.db"
    for path in Path(directory).glob("*.db"):
        if not path.name.endswith(mine):
            path.unlink(missing_ok=True)


async def _supervise(children: list[BaseProcess], spawn: Any) -> None:
    while True:
        await asyncio.sleep(SUPERVISE_INTERVAL_S)
        for index, child in enumerate(children):
            if not child.is_alive():
                log.warning("gateway worker exited; restarting", extra={"exitcode": child.exitcode})
                children[index] = spawn(index + 1)


def _join_all(children: list[BaseProcess], deadline: float) -> None:
    """Wait for every child until ``deadline`` (one budget for all), then kill the rest."""
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.is_alive():
            child.kill()
            child.join(5)
