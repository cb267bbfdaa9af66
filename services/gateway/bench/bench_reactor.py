"""The cost of pynetdicom's association reactors: a no-op C-STORE SCP, polling versus waiting.

A C-STORE SCP that answers Success without doing anything runs in a process of its own, built
like the gateway's listener (``GatewayAssociationServer``, the gateway's presentation
contexts), with either pynetdicom's own request handler (``polling``: two threads per
association that wake every millisecond) or ``pacs_gateway.event_reactor``'s (``event``: they
wait on the socket). DCMTK ``storescu`` sends the same CT slice (pydicom's ``CT_small.dcm``)
``--instances`` times over ``--associations`` parallel associations; the bench reports
instances per second (first connection to last response) and the CPU milliseconds per instance
of the SCP process and of the clients (psutil / ``RUSAGE_CHILDREN``, over the transfer only).
Rounds alternate the two reactors. ``--idle N`` measures instead what ``N`` open, idle
associations cost the SCP: CPU per second over ``--idle-seconds``.

    uv run python services/gateway/bench/bench_reactor.py [--instances N] [--rounds N]
        [--associations N] [--json FILE] [--idle N [--idle-seconds S]]
    (needs DCMTK; no infrastructure)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from cpu_meter import CLIENT, CpuMeter
from pacs_common.local import free_port
from pacs_gateway.dimse.contexts import scp_contexts
from pacs_gateway.dimse_server import GatewayAssociationServer
from pacs_gateway.event_reactor import EventRequestHandler
from pydicom.data import get_testdata_file
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import RequestHandler

STORESCU = "/usr/bin/storescu"  # DCMTK; the venv's pynetdicom ``storescu`` comes first on PATH
REACTORS = ("polling", "event")


def serve(reactor: str, port: int) -> None:
    """Run the no-op SCP until killed (the child process)."""
    ae = AE(ae_title="CLOUDPACS")
    ae.maximum_associations = 64
    handler = EventRequestHandler if reactor == "event" else RequestHandler
    server = ae.make_server(
        ("127.0.0.1", port),
        contexts=scp_contexts(),
        evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)],
        server_class=GatewayAssociationServer,
        request_handler=handler,
    )
    print("ready", flush=True)
    server.serve_forever(poll_interval=0.2)


def send(files: list[Path], port: int, associations: int) -> float:
    """Wall seconds for ``associations`` storescu processes to send ``files`` between them."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    shares = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(  # noqa: S603  (fixed DCMTK binary, our own files)
            [STORESCU, "-aet", "BENCH", "-aec", "CLOUDPACS", "127.0.0.1", str(port)]
            + [str(path) for path in share],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for share in shares
    ]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - started
    failed = [e for p, e in zip(procs, errors, strict=True) if p.returncode != 0]
    if failed:
        raise RuntimeError(failed[0].decode(errors="replace"))
    return elapsed


@contextmanager
def scp_process(reactor: str) -> Iterator[tuple[int, int]]:
    """The no-op SCP in a process of its own: (pid, port); killed afterwards."""
    port = free_port()
    scp = subprocess.Popen(  # noqa: S603  (this script, as the SCP)
        [sys.executable, __file__, "--serve", reactor, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert scp.stdout is not None and scp.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        yield scp.pid, port
    finally:
        scp.kill()
        scp.wait()


def one_run(reactor: str, files: list[Path], associations: int) -> dict[str, Any]:
    with scp_process(reactor) as (pid, port):
        meter = CpuMeter({"scp": pid})
        meter.start()
        elapsed = send(files, port, associations)
        used = meter.stop()
    n = len(files)
    return {
        "reactor": reactor,
        "associations": associations,
        "instances": n,
        "inst_per_s": n / elapsed,
        "scp_cpu_ms": 1000 * used["scp"] / n,
        "storescu_cpu_ms": 1000 * used[CLIENT] / n,
    }


def idle_cost(reactor: str, associations: int, seconds: float) -> dict[str, Any]:
    """CPU the SCP spends per second while ``associations`` associations sit idle."""
    with scp_process(reactor) as (pid, port):
        ae = AE(ae_title="BENCH")
        ae.add_requested_context(Verification)
        opened = [
            ae.associate("127.0.0.1", port, ae_title="CLOUDPACS") for _ in range(associations)
        ]
        try:
            assert all(assoc.is_established for assoc in opened)
            time.sleep(0.5)
            meter = CpuMeter({"scp": pid})
            meter.start()
            time.sleep(seconds)
            used = meter.stop()["scp"]
        finally:
            for assoc in opened:
                assoc.release()
    return {
        "reactor": reactor,
        "idle_associations": associations,
        "scp_cpu_ms_per_s": 1000 * used / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--associations", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--idle", type=int, default=0, help="measure N idle associations")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--serve", choices=REACTORS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    results = []
    if args.idle:
        for round_ in range(args.rounds):
            for reactor in REACTORS:
                result = idle_cost(reactor, args.idle, args.idle_seconds)
                result["round"] = round_ + 1
                results.append(result)
                print(
                    f"round {round_ + 1} {reactor:8s} {args.idle} idle assoc: SCP "
                    f"{result['scp_cpu_ms_per_s']:6.1f} ms CPU per second",
                    flush=True,
                )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    source = Path(str(get_testdata_file("CT_small.dcm")))
    with tempfile.TemporaryDirectory(prefix="bench-reactor-") as tmp:
        files = []
        for i in range(args.instances):
            path = Path(tmp) / f"ct{i:05d}.dcm"
            shutil.copyfile(source, path)
            files.append(path)
        for round_ in range(args.rounds):
            for reactor in REACTORS:
                result = one_run(reactor, files, args.associations)
                result["round"] = round_ + 1
                results.append(result)
                print(
                    f"round {round_ + 1} {reactor:8s} {args.associations} assoc: "
                    f"{result['inst_per_s']:7.1f} inst/s, SCP {result['scp_cpu_ms']:5.2f} ms/inst,"
                    f" storescu {result['storescu_cpu_ms']:5.2f} ms/inst",
                    flush=True,
                )
    print(f"load average {os.getloadavg()}, cores {psutil.cpu_count()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
