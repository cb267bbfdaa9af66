"""PeriodicTask: a background job whose passes may fail never stops by itself."""

from __future__ import annotations

import asyncio
import logging

from pacs_common.errors import UnavailableError
from pacs_common.periodic import PeriodicTask


async def test_failing_passes_do_not_end_the_loop() -> None:
    passes: list[int] = []
    third = asyncio.Event()

    async def run_once() -> None:
        passes.append(len(passes))
        if len(passes) == 1:
            raise RuntimeError("a bug in one pass")
        if len(passes) == 2:
            raise UnavailableError("S3 is down")
        third.set()

    task = PeriodicTask("test", run_once, 0.01, logging.getLogger(__name__))
    task.start()
    task.start()  # a second start does nothing
    await asyncio.wait_for(third.wait(), 10)
    assert task.running
    await task.stop()
    await task.stop()
    assert not task.running
    count = len(passes)
    await asyncio.sleep(0.05)
    assert len(passes) == count  # stopped means stopped


async def test_stop_interrupts_a_pass_in_progress() -> None:
    started = asyncio.Event()

    async def run_once() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = PeriodicTask("test", run_once, 0.01, logging.getLogger(__name__))
    task.start()
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(task.stop(), 10)
    assert not task.running
