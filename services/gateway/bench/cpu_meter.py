"""CPU time used by named process trees during one measured transfer.

The ingest bench runs everything on one small machine, so what bounds throughput is the CPU
that each process spends per instance: dividing the machine's cores by the sum gives the
highest rate any number of associations could reach. psutil reads the counters; the clients
(``storescu``, children of the bench that exit during the run) are counted with
``RUSAGE_CHILDREN``, which covers exactly the children reaped meanwhile.
"""

from __future__ import annotations

import resource
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[3]
CLIENT = "storescu"


def infra_pids() -> dict[str, int]:
    """The S3 server and Kafka broker started by ``infra/up.sh`` (those running)."""
    found = {}
    for name, pid_file in (("S3 server", "s3/s3.pid"), ("Kafka", "kafka/kafka.pid")):
        try:
            pid = int((REPO / ".cache" / "run" / pid_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if psutil.pid_exists(pid):
            found[name] = pid
    return found


def _tree_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of ``pid`` and its descendants, by pid."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """Counts CPU seconds of process trees between :meth:`start` and :meth:`stop`."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self._before: dict[str, dict[int, float]] = {}
        self._children_before = 0.0

    def start(self) -> None:
        self._before = {name: _tree_seconds(pid) for name, pid in self.roots.items()}
        self._children_before = _children_seconds()

    def stop(self) -> dict[str, float]:
        """CPU seconds by name since :meth:`start`; the clients' under ``storescu``."""
        used = {CLIENT: _children_seconds() - self._children_before}
        for name, pid in self.roots.items():
            before = self._before.get(name, {})
            after = _tree_seconds(pid)
            # A process started during the run counts from zero; one that ended is lost (the
            # services and servers measured here all outlive the run).
            used[name] = sum(now - before.get(child, 0.0) for child, now in after.items())
        return used
