"""The base of every DIMSE service handler: what each of them needs, written once.

pynetdicom calls a handler synchronously in the association's thread. Each handler needs:

- the **admitted caller** of the association (:mod:`pacs_gateway.admission` decided it at
  A-ASSOCIATE time; its tenant bounds everything the request may see or change);
- a **deadline** on the work it submits to the io loop (the loop applies the upstream deadline
  itself; the handler's guards against a stuck loop, so a margin is added);
- **every exception turned into a DIMSE failure status** with its PS3 citation, so that no
  exception reaches pynetdicom (which would answer an uninformative 0xC000 or abort): a
  :class:`DimseFailure` raised anywhere in a handler is its status, an upstream that is
  unavailable or too slow is "out of resources" (the sender retries later), anything else
  0xC0FF with the reason logged;
- **metrics**: the time to the final status, where the service has a histogram for it. The count
  of operations by status class is kept for every service at once from the responses sent
  (:mod:`pacs_gateway.dimse.metrics`), because pynetdicom answers some requests itself (C-MOVE
  to an unknown destination, sub-operation totals).

The differences between services stay in the subclasses: what they check, what they ask
upstream, and which status stands for "retry later" (A700 for C-STORE and C-FIND, A701 for
C-MOVE and C-GET).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ClassVar, TypeVar

from pacs_common.errors import InvalidArgumentError, PacsError, UnavailableError
from prometheus_client import Histogram
from pydicom.dataset import Dataset

from pacs_gateway.admission import Caller, CallerOf
from pacs_gateway.dimse import codes
from pacs_gateway.io_loop import IoLoop

log = logging.getLogger(__name__)

T = TypeVar("T")
Response = TypeVar("Response")

DEADLINE_MARGIN_S = 5.0
"""Added to the upstream deadline for the handler's own wait on the io loop."""


class DimseFailure(Exception):  # noqa: N818  (a status to answer with, not an error condition)
    """A request answered with a failure (or cancel) status: raised anywhere in a handler,
    answered by the base. ``status`` is the code, ``comment`` the Error Comment."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


class DimseHandler:
    """Base of the DIMSE service handlers: the caller, the deadline, failures, metrics."""

    operation: ClassVar[str] = "DIMSE"
    """The DIMSE service, for logs (C-STORE, C-FIND, ...)."""
    required_role: ClassVar[str | None] = None
    """The role a negotiated user identity must hold to use this service (:mod:`pacs_gateway.
    user_identity`); associations without one are bounded by the site registry alone."""
    unavailable_status: ClassVar[int] = codes.OUT_OF_RESOURCES
    """The "retry later" status of this service, answered when an upstream is unavailable."""
    unavailable_comment: ClassVar[str] = "upstream unavailable, retry later"
    invalid_status: ClassVar[int] = codes.INVALID_QUERY
    """The status of a request the index cannot evaluate (InvalidArgumentError upstream)."""
    duration: ClassVar[Histogram | None] = None
    """Histogram of the time to the final status, if the service has one."""

    def __init__(self, io: IoLoop, caller_of: CallerOf, timeout_s: float) -> None:
        self._io = io
        self._caller_of = caller_of
        self._deadline_s = timeout_s + DEADLINE_MARGIN_S

    def caller(self, event: Any) -> Caller:
        """The admitted caller of the event's association.

        Raises:
            DimseFailure: the association was never admitted, or its user identity lacks the
                service's role (0x0124 Refused: Not Authorized, PS3.7 C.5.16).
        """
        caller = self._caller_of(event.assoc)
        if caller is None:
            raise DimseFailure(codes.NOT_AUTHORIZED, "association not admitted")
        role = self.required_role
        if caller.roles is not None and role is not None and role not in caller.roles:
            raise DimseFailure(codes.NOT_AUTHORIZED, f"the user identity lacks the role {role}")
        return caller

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` in the io loop and wait for it, within the handler's deadline.

        Raises:
            TimeoutError: the deadline passed.
            Exception: whatever ``work`` raised.
        """
        return self._io.run(work, timeout=self._deadline_s)

    def failure(self, exc: BaseException) -> Dataset:
        """The failure status that answers ``exc`` (PS3.7 C.4); never raises."""
        if isinstance(exc, DimseFailure):
            return codes.status(exc.status, exc.comment)
        if isinstance(exc, (UnavailableError, TimeoutError)):
            log.warning(
                "%s: upstream unavailable", self.operation, extra={"error": str(exc) or "timeout"}
            )
            return codes.status(self.unavailable_status, self.unavailable_comment)
        if isinstance(exc, InvalidArgumentError):
            return codes.status(self.invalid_status, exc.message)
        if isinstance(exc, PacsError):
            log.warning("%s failed", self.operation, extra={"error": exc.message})
            return codes.status(codes.UNEXPECTED_FAILURE, f"{self.operation} failed")
        log.error("%s: unexpected error", self.operation, exc_info=exc)
        return codes.status(codes.UNEXPECTED_FAILURE, "internal error")

    def answer(self, respond: Callable[[], Dataset]) -> Dataset:
        """The one response of a single-response service (C-STORE, N-ACTION): what
        ``respond`` returns, or the failure status of what it raised."""
        started = time.perf_counter()
        try:
            result = respond()
        except Exception as exc:
            result = self.failure(exc)
        self._observe(started)
        return result

    def answer_each(
        self, respond: Callable[[], Iterator[tuple[int | Dataset, Response]]]
    ) -> Iterator[tuple[int | Dataset, Response | None]]:
        """The responses of a multiple-response service (C-FIND): pending ones from
        ``respond``, ended by the failure status of whatever it raised."""
        started = time.perf_counter()
        try:
            yield from respond()
        except Exception as exc:
            yield self.failure(exc), None
        finally:
            self._observe(started)

    def _observe(self, started: float) -> None:
        if self.duration is not None:
            self.duration.observe(time.perf_counter() - started)
