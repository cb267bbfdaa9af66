"""The hostile-peer probes of issue 17, against the cloudpacs gateway and Orthanc side by side.

Probes (one table row each):

* **PDU flood**: one peer announces a 2 GiB P-DATA-TF and streams up to 600 MiB: how much the
  server took before it closed the connection, and its memory (RSS of the process tree)
  before and at the peak.
* **random bytes**: 200 connections from 127.0.0.1 send random bytes at once while a
  well-behaved peer at 127.0.0.2 asks C-ECHO: answered or not, and how long it took.
* **idle connections**: 300 idle TCP connections from 127.0.0.1, then a C-ECHO from
  127.0.0.2: answered or not; how many of the 300 the server closed.
* **kill -9 of the primary** (cloudpacs only: Orthanc is one process): do its workers die
  with it and free the port.

The cloudpacs gateway runs as ``python -m pacs_gateway`` with two workers and its defaults
(storage and the indexer are not needed for C-ECHO: their ports are closed). Orthanc (Debian
1.10) runs with defaults. Usage::

    uv run python services/gateway/bench/probe_hostile.py [--skip-orthanc]
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
from pynetdicom import AE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import OrthancTarget

VERIFICATION = "1.2.840.10008.1.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_rss_mib(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 1024**2


def echo(port: int, called: str, source: str = "127.0.0.2") -> tuple[bool, float]:
    ae = AE(ae_title="GOODSCU")
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    started = time.monotonic()
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=called, bind_address=(source, 0))
    except OSError:
        return False, time.monotonic() - started
    if not assoc.is_established:
        return False, time.monotonic() - started
    status = assoc.send_c_echo()
    assoc.release()
    ok = "Status" in status and int(status.Status) == 0
    return ok, time.monotonic() - started


def probe_pdu_flood(port: int, pid: int) -> str:
    before = tree_rss_mib(pid)
    peak = [before]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss_mib(pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    sent = 0
    chunk = bytes(1024 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(struct.pack(">BBL", 0x04, 0, 2 * 1024**3 - 1))
        with contextlib.suppress(OSError):
            while sent < 600 * 1024**2:
                sent += sock.send(chunk)
    time.sleep(1.0)
    stop.set()
    watcher.join()
    outcome = (
        "all 600 MiB taken" if sent >= 600 * 1024**2 else f"closed after {sent / 1024**2:.0f} MiB"
    )
    return f"{outcome}; memory {before:.0f} -> peak {peak[0]:.0f} MiB"


def probe_random_bytes(port: int, called: str) -> str:
    rng = random.Random(17)  # noqa: S311  (reproducible garbage, not secrets)
    payloads = [rng.randbytes(rng.randint(1, 8192)) for _ in range(200)]

    def garbage(data: bytes) -> None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 10) as s:
            s.sendall(data)
            s.settimeout(5)
            with contextlib.suppress(OSError):
                s.recv(16)

    threads = [threading.Thread(target=garbage, args=(p,), daemon=True) for p in payloads]
    for thread in threads:
        thread.start()
    ok, took = echo(port, called)
    for thread in threads:
        thread.join(30)
    return f"C-ECHO from another peer {'answered' if ok else 'REFUSED'} in {took:.2f} s"


def probe_idle(port: int, called: str) -> str:
    held: list[socket.socket] = []
    for _ in range(300):  # a server whose accept queue is full leaves the connect hanging
        with contextlib.suppress(OSError):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
    time.sleep(1.0)
    ok, took = echo(port, called)
    closed = 0
    for sock in held:
        sock.settimeout(0.05)
        try:
            closed += sock.recv(1) == b""
        except TimeoutError:
            pass
        except OSError:
            closed += 1
        sock.close()
    return (
        f"C-ECHO from another peer {'answered' if ok else 'REFUSED'} in {took:.2f} s; "
        f"{len(held)} of 300 connected, {closed} of them closed by the server at once"
    )


@contextlib.contextmanager
def cloudpacs_gateway() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port, closed = free_port(), free_port()
    env = {
        **os.environ,
        "PACS_GATEWAY_WORKERS": "2",
        "PACS_GATEWAY_DICOM_PORT": str(port),
        "PACS_GATEWAY_GRPC_PORT": str(free_port()),
        "PACS_GATEWAY_STORAGE_TARGET": f"127.0.0.1:{closed}",
        "PACS_GATEWAY_INDEXER_TARGET": f"127.0.0.1:{closed}",
        "PACS_GATEWAY_SHUTDOWN_GRACE_S": "2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pacs_gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.2)
        time.sleep(3)  # the worker binds too
        yield process, port
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def probe_kill_primary(process: subprocess.Popen[bytes], port: int) -> str:
    workers = [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(psutil.pid_exists(w) for w in workers):
        time.sleep(0.1)
    alive = [w for w in workers if psutil.pid_exists(w) and psutil.Process(w).status() != "zombie"]
    listening = subprocess.run(  # noqa: S603  (ss with our own arguments)
        ["ss", "-Hltn", f"sport = :{port}"],  # noqa: S607  (iproute2 from PATH)
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    state = "STILL LISTENED ON" if listening else "free (no listener left)"
    return f"{len(alive)} of {len(workers)} worker processes left; port {state}"


def main() -> None:
    orthanc_results = ["(not run)"] * 4
    if "--skip-orthanc" not in sys.argv:  # Orthanc's idle probe alone takes minutes
        with OrthancTarget() as orthanc:
            assert orthanc.process is not None
            pid = orthanc.process.pid
            orthanc_results = [
                probe_pdu_flood(orthanc.dicom_port, pid),
                probe_random_bytes(orthanc.dicom_port, "ANY-SCP"),
                probe_idle(orthanc.dicom_port, "ANY-SCP"),
                "— (one process)",
            ]
    with cloudpacs_gateway() as (process, port):
        ours = [
            probe_pdu_flood(port, process.pid),
            probe_random_bytes(port, "CLOUDPACS"),
            probe_idle(port, "CLOUDPACS"),
            probe_kill_primary(process, port),
        ]
    names = ["2 GiB PDU announced, 600 MiB streamed", "200 connections of random bytes",
             "300 idle TCP connections", "kill -9 of the gateway's primary"]  # fmt: skip
    rows = list(zip(names, orthanc_results, ours, strict=True))
    print("| probe | Orthanc 1.10 (Debian) | cloudpacs |")
    print("|---|---|---|")
    for name, theirs, mine in rows:
        print(f"| {name} | {theirs} | {mine} |")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
