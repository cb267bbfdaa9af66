"""One asyncio event loop in a thread of its own, for everything the gateway does with gRPC.

Why: pynetdicom calls its event handlers synchronously, in one thread per association, while
the service clients (storage, indexer) and the IngestService server are ``grpc.aio``. Every
gRPC object lives in this one loop; association threads hand it a coroutine with
:meth:`IoLoop.run` and block until it finishes, which is exactly the DIMSE semantics (the
C-STORE response waits for ``storage.Put``). All associations share the same HTTP/2 channels,
and the loop does not depend on whoever called :meth:`GatewayApp.start` (a test's loop or
``serve()``) staying responsive. Sync gRPC stubs would avoid the thread but would duplicate
the storage client's streaming code and need a second set of channels for the async server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class IoLoop:
    """An event loop running in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str = "gateway-io") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop itself (for code that must create objects bound to it)."""
        return self._loop

    def start(self) -> None:
        """Start the thread; safe to call twice."""
        if not self._started:
            self._started = True
            self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` in the loop and block the calling (non-loop) thread for its result.

        Raises:
            TimeoutError: it did not finish in time (it is then cancelled).
            Exception: whatever ``coro`` raised.
        """
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise TimeoutError("operation timed out") from exc

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` running in this loop from another event loop."""
        if asyncio.get_running_loop() is self._loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def stop(self) -> None:
        """Stop the loop and join the thread; safe to call twice."""
        if not self._started or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
