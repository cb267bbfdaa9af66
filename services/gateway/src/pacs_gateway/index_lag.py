"""Backpressure from the index: a C-STORE waits while the indexer is behind.

"Acknowledged means findable": a Success should not run ahead of the index by more than a
moment. When senders outpace the indexer (a sustained full rate on shared cores, a migration
pushing a whole archive), the index falls behind without bound and acknowledged instances stay
unfindable for minutes. So before taking an instance the gateway looks at the indexer's
consumer lag: the records of ``pacs.instances.v1`` its group has not committed past, read from
Kafka every ``poll_s`` (:class:`pacs_common.consumer_lag.ConsumerLagProbe`). Above
``max_events`` the C-STORE waits, at most ``hold_max_s``, for the lag to come down. The sender
keeps its image meanwhile (an association has one operation outstanding), so ingest slows to
the pace of the index instead of outrunning it; nothing is refused.

It never stops ingest:

* only an indexer seen making progress holds anything; one that makes none for ``stall_s``
  (stopped, crashed, rebalancing, stuck on a record) opens the gate: durability first, the
  index catches up later;
* Kafka not answering the probe opens it too (the write itself then fails or succeeds on its
  own terms);
* no wait is longer than ``hold_max_s``, whatever the lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from pacs_common.consumer_lag import ConsumerLagProbe
from pacs_common.errors import UnavailableError
from pacs_common.periodic import PeriodicTask
from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

INDEX_LAG_HOLDS = Counter(
    "pacs_gateway_index_lag_holds",
    "C-STOREs that waited because the indexer was behind",
)
INDEX_LAG_HOLD_SECONDS = Histogram(
    "pacs_gateway_index_lag_hold_seconds",
    "How long a C-STORE waited for the indexer to catch up",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)


class LagSource(Protocol):
    """Where the gate reads the indexer's position
    (:class:`pacs_common.consumer_lag.ConsumerLagProbe`)."""

    async def positions(self, group: str, topic: str) -> tuple[int, int]:
        """(end offsets, committed offsets), each summed over the topic's partitions."""
        ...


class IndexLagGate:
    """Holds C-STOREs while the indexer's lag is above a bound; :meth:`check` reads it."""

    def __init__(
        self,
        source: LagSource,
        group: str,
        topic: str,
        *,
        max_events: int,
        hold_max_s: float,
        stall_s: float,
        poll_s: float,
    ) -> None:
        self._source = source
        self._group = group
        self._topic = topic
        self.max_events = max_events
        self.hold_max_s = hold_max_s
        self.stall_s = stall_s
        self.poll_s = poll_s
        self._open = asyncio.Event()
        self._open.set()  # until the first reading says otherwise
        self._committed: int | None = None
        # Progress is seen between two readings; until then the indexer counts as stalled, so
        # a backlog nobody is indexing (no indexer running yet) holds nothing.
        self._progress_at = float("-inf")
        self.lag: int | None = None
        """The last lag read (None: unknown, Kafka did not answer)."""

    async def check(self) -> None:
        """Read the lag once and open or close the gate."""
        try:
            ends, committed = await self._source.positions(self._group, self._topic)
        except UnavailableError as exc:
            if self.lag is not None:
                log.warning(
                    "indexer lag unknown: not holding C-STOREs", extra={"error": exc.message}
                )
            self.lag = None
            self._open.set()
            return
        now = time.monotonic()
        if self._committed is not None and committed != self._committed:
            self._progress_at = now
        self._committed = committed
        self.lag = ends - committed
        stalled = now - self._progress_at > self.stall_s
        if self.lag <= self.max_events or stalled:
            self._open.set()
        else:
            self._open.clear()

    def release(self) -> None:
        """Open the gate until the next reading."""
        self._open.set()

    @property
    def holding(self) -> bool:
        """Whether a C-STORE would wait now (read from any thread: the C-STORE handler asks
        before it hands :meth:`admit` to the io loop, which costs a thread round trip)."""
        return not self._open.is_set()

    async def admit(self) -> float:
        """Wait while the indexer is behind (at most ``hold_max_s``); the seconds waited."""
        if self._open.is_set():
            return 0.0
        started = time.monotonic()
        INDEX_LAG_HOLDS.inc()
        with contextlib.suppress(TimeoutError):  # never stop ingest: the index catches up
            await asyncio.wait_for(self._open.wait(), self.hold_max_s)
        waited = time.monotonic() - started
        INDEX_LAG_HOLD_SECONDS.observe(waited)
        return waited


class IndexLagWatch:
    """The gate and the probe that feeds it, run in the gateway's io loop: one reading every
    ``poll_s`` (:class:`pacs_common.periodic.PeriodicTask`); the probe connects on a reading
    while Kafka answers, and the gate stays open while it does not."""

    def __init__(self, probe: ConsumerLagProbe, gate: IndexLagGate) -> None:
        self.probe = probe
        self.gate = gate
        self._connected = False
        self._task = PeriodicTask("index lag", self._read, gate.poll_s, log)

    def start(self) -> None:
        """Start reading (in the running loop)."""
        self._task.start()

    async def _read(self) -> None:
        if not self._connected:
            try:
                await self.probe.start()
            except UnavailableError:
                return  # the gate is open (nothing read yet, or Kafka lost: check() opened it)
            self._connected = True
        try:
            await self.gate.check()
        except BaseException:
            self.gate.release()  # an unforeseen failure must not leave C-STOREs held
            raise

    async def stop(self) -> None:
        """Stop reading and disconnect; safe to call twice."""
        await self._task.stop()
        await self.probe.stop()
