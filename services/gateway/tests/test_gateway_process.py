"""The gateway as a process: several workers sharing the DICOM port, limits, graceful stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from gateway_helpers import (
    closed_port,
    eventually,
    free_port,
    run_dcmtk,
    scu_associate,
    wait_for_port,
)


def _listeners(port: int) -> int:
    """How many sockets listen on ``port`` (each SO_REUSEPORT socket is listed on its own)."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return len([line for line in out.splitlines() if line.strip()])


def _gateway_env(port: int) -> dict[str, str]:
    return {
        "PACS_GATEWAY_WORKERS": "2",
        "PACS_GATEWAY_DICOM_PORT": str(port),
        "PACS_GATEWAY_GRPC_PORT": "0",
        "PACS_GATEWAY_STORAGE_TARGET": f"127.0.0.1:{closed_port()}",
        "PACS_GATEWAY_INDEXER_TARGET": f"127.0.0.1:{closed_port()}",
        "PACS_GATEWAY_SHUTDOWN_GRACE_S": "1",
    }


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def test_workers_share_the_port_and_stop_on_sigterm() -> None:
    port = free_port()
    env = {**os.environ, **_gateway_env(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pacs_gateway", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_for_port(port, within_s=120)

        async def all_listening() -> bool:
            return _listeners(port) == 2

        assert await eventually(all_listening, within_s=120), _listeners(port)

        results = await asyncio.gather(
            *(run_dcmtk("echoscu", "-aec", "CLOUDPACS", "127.0.0.1", str(port)) for _ in range(12))
        )
        assert [code for code, _ in results] == [0] * 12, results
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert _listeners(port) == 0  # the workers are gone too


async def test_workers_die_with_a_killed_primary() -> None:
    """kill -9 of the first process takes its workers with it and frees the DICOM port, so a
    restarted gateway does not share the port with an orphan."""
    port = free_port()
    env = {**os.environ, **_gateway_env(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pacs_gateway", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    workers: list[int] = []
    try:

        async def all_listening() -> bool:
            return _listeners(port) == 2

        assert await eventually(all_listening, within_s=120), _listeners(port)
        workers.extend(pid for pid in _children(proc.pid) if _is_worker(pid))
        assert len(workers) == 1, workers
        proc.kill()
        await proc.wait()

        async def workers_gone() -> bool:
            return not any(_running(pid) for pid in workers)

        assert await eventually(workers_gone, within_s=10)

        async def port_free() -> bool:
            return _listeners(port) == 0

        assert await eventually(port_free, within_s=10), _listeners(port)
        code, output = await run_dcmtk("echoscu", "-aec", "CLOUDPACS", "127.0.0.1", str(port))
        assert code != 0, output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in workers:  # an orphan left by a regression must not outlive the test
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


async def test_association_limit_rejects_transiently(start_gateway) -> None:
    app = await start_gateway(max_associations=1)
    first = await asyncio.to_thread(scu_associate, app.dicom_port)
    assert first.is_established
    try:
        second = await asyncio.to_thread(scu_associate, app.dicom_port)
        assert second.is_rejected
        rejection = second.acceptor.primitive
        # PS3.8 Table 9-21: rejected-transient, service-provider (presentation), local limit
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (2, 3, 2)
    finally:
        await asyncio.to_thread(first.release)

    async def slot_free() -> bool:  # the acceptor's thread ends a moment after the release
        return app.dimse.active_associations() == 0

    assert await eventually(slot_free, within_s=10)
    third = await asyncio.to_thread(scu_associate, app.dicom_port)
    assert third.is_established
    await asyncio.to_thread(third.release)


async def test_idle_association_is_closed_after_the_network_timeout(start_gateway) -> None:
    app = await start_gateway(network_timeout=0.5)
    assoc = await asyncio.to_thread(scu_associate, app.dicom_port)
    assert assoc.is_established

    async def closed() -> bool:
        return not assoc.is_established

    assert await eventually(closed, within_s=10)
    assert assoc.is_aborted or assoc.is_released


async def test_maximum_pdu_length_is_announced(start_gateway) -> None:
    app = await start_gateway(max_pdu_size=65536)
    assoc = await asyncio.to_thread(scu_associate, app.dicom_port)
    assert assoc.is_established
    try:
        # A-ASSOCIATE-AC Maximum Length sub-item (PS3.8 D.1): what the sender may send us
        assert assoc.acceptor.maximum_length == 65536
    finally:
        await asyncio.to_thread(assoc.release)
