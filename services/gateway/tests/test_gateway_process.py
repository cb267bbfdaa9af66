"""The gateway as a process: several workers sharing the DICOM port, limits, graceful stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

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


async def test_workers_share_the_port_and_stop_on_sigterm() -> None:
    port = free_port()
    env = {
        **os.environ,
        "PACS_GATEWAY_WORKERS": "2",
        "PACS_GATEWAY_DICOM_PORT": str(port),
        "PACS_GATEWAY_GRPC_PORT": "0",
        "PACS_GATEWAY_STORAGE_TARGET": f"127.0.0.1:{closed_port()}",
        "PACS_GATEWAY_INDEXER_TARGET": f"127.0.0.1:{closed_port()}",
        "PACS_GATEWAY_SHUTDOWN_GRACE_S": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pacs_gateway", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_for_port(port, within_s=30)

        async def all_listening() -> bool:
            return _listeners(port) == 2

            assert await eventually(all_listening, within_s=30), _listeners(port)

        results = await asyncio.gather(
            *(run_dcmtk("echoscu", "-aec", "CLOUDPACS", "127.0.0.1", str(port)) for _ in range(12))
        )
        assert [code for code, _ in results] == [0] * 12, results
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert _listeners(port) == 0  # the workers are gone too


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
