"""The syslog export: every stored record, as a DICOM audit message, to the collector.

The durable queue is the ``audit_outbox`` table, filled in the same transaction as the records
(:mod:`pacs_audit.trail`), so a record is exported even if the collector was down when it was
stored, or the service restarted meanwhile. This loop sends the oldest rows in sequence order
and deletes them only once the TLS connection took them; while the collector is unreachable
it backs off and tries again (``pacs_audit_export_backlog`` shows how many wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_common.metrics import AUDIT_EXPORT_BACKLOG, AUDIT_EXPORT_FAILURES, AUDIT_EXPORTED
from sqlalchemy import delete, func, select

from pacs_audit.syslog import SyslogSender, message
from pacs_audit.trail import Trail, outbox, records
from pacs_audit.xml_message import render

log = logging.getLogger(__name__)


class Exporter:
    """Drains the outbox to the collector in the background."""

    def __init__(
        self, trail: Trail, sender: SyslogSender, *, batch: int = 200, poll_s: float = 0.5
    ) -> None:
        self.trail = trail
        self.sender = sender
        self.batch = batch
        self.poll_s = poll_s
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name="audit-export")

    async def stop(self) -> None:
        """Stop the loop (what is left stays in the outbox); safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.sender.close()

    def backlog(self) -> int:
        """How many records wait to be sent."""
        with self.trail.connection() as conn:
            return int(conn.execute(select(func.count()).select_from(outbox)).scalar_one())

    def _pending(self) -> list[tuple[int, bytes]]:
        with self.trail.connection() as conn:
            rows = conn.execute(
                select(records.c.seq, records.c.payload)
                .join(outbox, outbox.c.seq == records.c.seq)
                .order_by(records.c.seq)
                .limit(self.batch)
            ).all()
        return [(int(row.seq), bytes(row.payload)) for row in rows]

    def _done(self, seqs: list[int]) -> None:
        with self.trail.connection() as conn:
            conn.execute(delete(outbox).where(outbox.c.seq.in_(seqs)))

    async def export_once(self) -> int:
        """Send one batch; return how many were sent (0: nothing waiting).

        Raises:
            OSError, TimeoutError: the collector is unreachable (the batch stays queued).
        """
        pending = await asyncio.to_thread(self._pending)
        if not pending:
            return 0
        messages = []
        for _, payload in pending:
            event = audit_pb.AuditEvent.FromString(payload)
            failure = event.outcome != audit_pb.AUDIT_OUTCOME_SUCCESS_UNSPECIFIED
            messages.append(
                message(render(event), event.event_time, failure=failure, app_name=event.source)
            )
        await self.sender.send(messages)
        await asyncio.to_thread(self._done, [seq for seq, _ in pending])
        self.sent += len(pending)
        AUDIT_EXPORTED.inc(len(pending))
        return len(pending)

    async def _run(self) -> None:
        delay = self.poll_s
        while True:
            try:
                while await self.export_once():
                    delay = self.poll_s
                AUDIT_EXPORT_BACKLOG.set(0)
            except (OSError, TimeoutError) as exc:
                AUDIT_EXPORT_FAILURES.inc()
                log.warning(
                    "syslog collector unreachable; records stay queued", extra={"error": repr(exc)}
                )
                delay = min(max(delay * 2, 1.0), 30.0)
                try:
                    AUDIT_EXPORT_BACKLOG.set(await asyncio.to_thread(self.backlog))
                except Exception as metric_exc:  # a metric must not stop the export
                    log.debug("export backlog not counted", extra={"error": repr(metric_exc)})
            except Exception:
                log.exception("audit export failed; retrying")
                delay = min(max(delay * 2, 1.0), 30.0)
            await asyncio.sleep(delay)
