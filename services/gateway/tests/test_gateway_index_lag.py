"""The index-lag gate's rules (``pacs_gateway.index_lag``): hold while a working indexer is
behind, never longer than the bound, never for an indexer that is down or unknown.

The lag readings are scripted here; reading them from Kafka is
``services/common/tests/test_consumer_lag.py``, and the gate in the C-STORE path is
``test_gateway_index_lag_cstore.py``."""

from __future__ import annotations

import asyncio
import time

from pacs_common.errors import UnavailableError
from pacs_gateway.index_lag import IndexLagGate, IndexLagWatch


class ScriptedLag:
    """Readings (ends, committed) the test sets; None: Kafka does not answer; "broken": a
    failure nobody foresaw."""

    def __init__(self) -> None:
        self.reading: tuple[int, int] | str | None = (0, 0)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def positions(self, group: str, topic: str) -> tuple[int, int]:
        if self.reading is None:
            raise UnavailableError("Kafka did not answer")
        if isinstance(self.reading, str):
            raise RuntimeError(self.reading)
        return self.reading


def gate(source: ScriptedLag, hold_max_s: float = 5.0, stall_s: float = 5.0) -> IndexLagGate:
    return IndexLagGate(
        source,
        "pacs-indexer",
        "pacs.instances.v1",
        max_events=100,
        hold_max_s=hold_max_s,
        stall_s=stall_s,
        poll_s=0.05,
    )


async def behind(source: ScriptedLag, lag_gate: IndexLagGate) -> None:
    """Two readings: the indexer progresses (committed moves) and is 300 behind."""
    source.reading = (500, 100)
    await lag_gate.check()
    source.reading = (600, 300)
    await lag_gate.check()


async def test_a_working_indexer_that_is_behind_holds_until_it_catches_up() -> None:
    source = ScriptedLag()
    lag_gate = gate(source)
    await behind(source, lag_gate)
    assert lag_gate.lag == 300
    admitted = asyncio.create_task(lag_gate.admit())
    await asyncio.sleep(0.2)
    assert not admitted.done()  # held
    source.reading = (620, 560)  # caught up to 60 behind
    await lag_gate.check()
    waited = await asyncio.wait_for(admitted, 1)
    assert 0.15 < waited < 1


async def test_within_the_bound_nothing_is_held() -> None:
    source = ScriptedLag()
    lag_gate = gate(source)
    source.reading = (500, 400)
    await lag_gate.check()
    source.reading = (600, 520)  # progressing, 80 behind
    await lag_gate.check()
    assert await lag_gate.admit() == 0


async def test_no_hold_lasts_longer_than_the_bound() -> None:
    source = ScriptedLag()
    lag_gate = gate(source, hold_max_s=0.3)
    await behind(source, lag_gate)
    started = time.monotonic()
    waited = await lag_gate.admit()
    assert 0.25 < waited < 1
    assert time.monotonic() - started < 1


async def test_a_backlog_nobody_indexes_holds_nothing() -> None:
    """No progress seen (no indexer running, or the first reading): open."""
    source = ScriptedLag()
    lag_gate = gate(source)
    source.reading = (5000, 0)
    await lag_gate.check()
    await lag_gate.check()
    assert lag_gate.lag == 5000
    assert await lag_gate.admit() == 0


async def test_an_indexer_that_stops_making_progress_stops_holding() -> None:
    source = ScriptedLag()
    lag_gate = gate(source, stall_s=0.2)
    await behind(source, lag_gate)
    held = asyncio.create_task(lag_gate.admit())
    await asyncio.sleep(0.3)  # committed stays at 300 past stall_s
    await lag_gate.check()
    assert await asyncio.wait_for(held, 1) < 1
    assert await lag_gate.admit() == 0


async def test_kafka_not_answering_holds_nothing() -> None:
    source = ScriptedLag()
    lag_gate = gate(source)
    await behind(source, lag_gate)
    source.reading = None
    await lag_gate.check()
    assert lag_gate.lag is None
    assert await lag_gate.admit() == 0


async def test_a_reading_that_fails_unforeseen_opens_the_gate_and_reading_goes_on() -> None:
    source = ScriptedLag()
    lag_gate = gate(source)
    await behind(source, lag_gate)
    assert lag_gate.holding
    watch = IndexLagWatch(source, lag_gate)  # type: ignore[arg-type]  (scripted probe)
    source.reading = "broken"
    watch.start()
    try:
        await asyncio.sleep(0.2)
        assert not lag_gate.holding
        source.reading = (900, 350)  # progress, 550 behind: held again by the next readings
        await asyncio.sleep(0.2)
        assert lag_gate.holding
    finally:
        await watch.stop()
