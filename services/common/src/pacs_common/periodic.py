"""A background job that runs one pass every so often until stopped.

Several services keep such a loop (storage's reconciler, the indexer's sweep of rejected
instances, the gateway's Storage Commitment recovery). Written once here so that each of them
has the same guarantee: a pass that fails is logged and the next one still runs on time; the
loop never ends silently, whatever a pass raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pacs_common.errors import PacsError


class PeriodicTask:
    """Runs ``run_once`` every ``interval_s`` in the running event loop (see the module)."""

    def __init__(
        self,
        name: str,
        run_once: Callable[[], Awaitable[object]],
        interval_s: float,
        log: logging.Logger,
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self._run_once = run_once
        self._log = log
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop (the first pass runs at once); a second call does nothing."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop the loop, interrupting a pass in progress; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self._run_once()
            except PacsError as exc:
                # A dependency is down: what the pass left is taken by the next one.
                self._log.warning("%s: pass incomplete: %s", self.name, exc.message)
            except Exception:
                self._log.exception("%s: pass failed; retrying at the next interval", self.name)
            await asyncio.sleep(self.interval_s)
