"""One shutdown budget for the whole gateway pod: the primary and its workers drain side by
side, so SIGTERM with associations open everywhere ends in about ``shutdown_grace_s``, not in
that much per process one after another (pacs_gateway.workers._stop_all)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from gateway_helpers import closed_port, eventually, free_port, scu_associate, wait_for_port

GRACE_S = 8


async def test_sigterm_drains_every_process_within_one_budget() -> None:
    port = free_port()
    env = {
        **os.environ,
        "PACS_GATEWAY_WORKERS": "2",
        "PACS_GATEWAY_DICOM_PORT": str(port),
        "PACS_GATEWAY_GRPC_PORT": "0",
        "PACS_GATEWAY_STORAGE_TARGET": f"127.0.0.1:{closed_port()}",
        "PACS_GATEWAY_INDEXER_TARGET": f"127.0.0.1:{closed_port()}",
        "PACS_GATEWAY_SHUTDOWN_GRACE_S": str(GRACE_S),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pacs_gateway", env=env, stderr=asyncio.subprocess.PIPE
    )
    await wait_for_port(port, within_s=30)

    async def both_listening() -> bool:
        out = await asyncio.create_subprocess_exec(
            "ss", "-Hltn", f"sport = :{port}", stdout=asyncio.subprocess.PIPE
        )
        text, _ = await out.communicate()
        return len([line for line in text.decode().splitlines() if line.strip()]) == 2

    assert await eventually(both_listening, within_s=30)
    # Idle associations that never release: each process holds some (the kernel spreads 8
    # connections over both sockets; all on one side has probability 1/128) and waits the
    # whole grace for them before aborting.
    held = [await asyncio.to_thread(scu_associate, port) for _ in range(8)]
    assert all(assoc.is_established for assoc in held)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(proc.communicate(), 120)
    elapsed = time.monotonic() - started
    for assoc in held:
        assoc.abort()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    # one budget: the grace plus process exit, well short of two graces in a row
    assert elapsed < 2 * GRACE_S - 1, elapsed
