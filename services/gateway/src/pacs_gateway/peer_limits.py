"""Bounded work per peer, counted per pod: connections, pending connections and associations.

Why: pynetdicom gives each connection a thread and counts associations per process only, so
one source address opening hundreds of connections (idle, or sending random bytes) could take
every slot of every worker process and starve everyone else (PS3.8 9.1.5: an acceptor may
close a connection that sends no A-ASSOCIATE-RQ in time; nothing in the standard makes it take
all of them). These limits apply to the whole pod (all worker processes together), at three
points:

* **accept** (:meth:`PeerLimits.admit_connection`): a connection is closed at once, before any
  thread or buffer is given to it, when its address already has
  ``max_connections_per_address`` open connections or ``max_pending_per_address`` connections
  that have not yet sent an A-ASSOCIATE-RQ, or the pod has ``max_pending_connections`` of
  those. Pending connections are closed by the ARTIM timer (``artim_timeout``) anyway.
* **A-ASSOCIATE-RQ** (:meth:`Ticket.associate`): the connection stops counting as pending; the
  association is refused (A-ASSOCIATE-RJ transient, local-limit-exceeded) when the pod already
  has ``pod_max_associations`` associations or this process ``max_associations``.
* **end of the association** (:meth:`Ticket.release`).

How the processes share the counts: the primary process allocates one shared-memory table
(``multiprocessing`` shared ctypes array) with one row per process slot; each process writes
only its own row (under a thread lock) and reads the sum of all rows. A worker killed with
``kill -9`` therefore never leaves counts behind: its supervisor zeroes its row before the
replacement starts in the same slot. There is no lock across processes (a process killed
while holding one would stall the others), so two processes deciding at the same instant may
each admit the last free place: a limit can be exceeded by at most one per other process.
Source addresses are counted in hashed buckets (:data:`BUCKETS`); two addresses sharing a
bucket share its limit, which makes the limits stricter, never looser.
"""

from __future__ import annotations

import ctypes
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BUCKETS = 4096
"""Hashed source-address buckets per process row."""
_CONNECTIONS = 0
_PENDING = BUCKETS
_ASSOCIATIONS = 2 * BUCKETS
_PENDING_TOTAL = 2 * BUCKETS + 1
ROW = 2 * BUCKETS + 2
"""Counters per process: connections per bucket, pending per bucket, associations, pending."""


@dataclass(frozen=True)
class LimitSettings:
    """The pod-wide limits (see the module docstring)."""

    max_connections_per_address: int
    max_pending_per_address: int
    max_pending_connections: int
    pod_max_associations: int
    process_max_associations: int = 1 << 30
    """Associations of this process (pynetdicom's own limit counts connections that never
    sent an A-ASSOCIATE-RQ too, so a flood of those would refuse everyone: it is replaced by
    this count of admitted associations)."""


SharedTable = Any
"""A ``multiprocessing`` shared array of ``slots * ROW`` signed 64-bit integers (or a plain
ctypes array of that size when there is one process)."""


def new_table(slots: int, factory: Callable[..., Any] | None = None) -> SharedTable:
    """A zeroed table for ``slots`` processes; ``factory`` is a multiprocessing context's
    ``RawArray`` (shared with spawned children), else a process-local ctypes array."""
    if factory is None:
        return (ctypes.c_int64 * (slots * ROW))()
    return factory(ctypes.c_int64, slots * ROW)


def clear_slot(table: SharedTable, slot: int) -> None:
    """Zero the row of a process that died (called before its replacement starts)."""
    ctypes.memset(ctypes.addressof(table) + slot * ROW * 8, 0, ROW * 8)


def bucket_of(address: str) -> int:
    """The bucket of a source address (stable across processes: not Python's salted hash)."""
    return zlib.crc32(address.encode("utf-8", "replace")) % BUCKETS


class PeerLimits:
    """This process's view of the pod's counters (``slot`` = its row)."""

    def __init__(self, table: SharedTable, slot: int, settings: LimitSettings) -> None:
        self._table = table
        self._slots = len(table) // ROW
        if not 0 <= slot < self._slots:
            raise ValueError(f"slot {slot} outside the table's {self._slots} rows")
        self._base = slot * ROW
        self.settings = settings
        self._lock = threading.Lock()

    def _total(self, column: int) -> int:
        table = self._table
        return sum(int(table[row * ROW + column]) for row in range(self._slots))

    def _add(self, column: int, delta: int) -> None:
        self._table[self._base + column] += delta

    def connections(self, address: str) -> int:
        """Open connections from ``address``'s bucket, pod-wide."""
        return self._total(_CONNECTIONS + bucket_of(address))

    def pending_total(self) -> int:
        """Connections that have not sent an A-ASSOCIATE-RQ, pod-wide."""
        return self._total(_PENDING_TOTAL)

    def associations(self) -> int:
        """Associations admitted and not yet ended, pod-wide."""
        return self._total(_ASSOCIATIONS)

    def admit_connection(self, address: str) -> Ticket | str:
        """Count a new connection from ``address``; the reason when it must be closed."""
        settings = self.settings
        bucket = bucket_of(address)
        with self._lock:
            if self._total(_CONNECTIONS + bucket) >= settings.max_connections_per_address:
                return "too many connections from this address"
            if self._total(_PENDING + bucket) >= settings.max_pending_per_address:
                return "too many connections from this address without A-ASSOCIATE-RQ"
            if self._total(_PENDING_TOTAL) >= settings.max_pending_connections:
                return "too many connections without A-ASSOCIATE-RQ"
            self._add(_CONNECTIONS + bucket, 1)
            self._add(_PENDING + bucket, 1)
            self._add(_PENDING_TOTAL, 1)
        return Ticket(self, bucket)

    def _associate(self, ticket: Ticket) -> bool:
        with self._lock:
            if ticket.pending:
                ticket.pending = False
                self._add(_PENDING + ticket.bucket, -1)
                self._add(_PENDING_TOTAL, -1)
            if ticket.associated:
                return True
            if self._total(_ASSOCIATIONS) >= self.settings.pod_max_associations:
                return False
            if self._table[self._base + _ASSOCIATIONS] >= self.settings.process_max_associations:
                return False
            ticket.associated = True
            self._add(_ASSOCIATIONS, 1)
            return True

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            if ticket.pending:
                ticket.pending = False
                self._add(_PENDING + ticket.bucket, -1)
                self._add(_PENDING_TOTAL, -1)
            if ticket.associated:
                ticket.associated = False
                self._add(_ASSOCIATIONS, -1)
            self._add(_CONNECTIONS + ticket.bucket, -1)


class Ticket:
    """One admitted connection's place in the counters (released exactly once)."""

    def __init__(self, limits: PeerLimits, bucket: int) -> None:
        self._limits = limits
        self.bucket = bucket
        self.pending = True
        self.associated = False
        self.released = False

    def associate(self) -> bool:
        """The A-ASSOCIATE-RQ arrived: no longer pending; False if the pod is at its
        association limit (the caller then rejects the association)."""
        return self._limits._associate(self)

    def release(self) -> None:
        """The connection ended (idempotent)."""
        self._limits._release(self)
