"""De-identifying stored studies into a project's target tenant, as long-running operations.

Each instance is read through storage, de-identified in a worker thread and written into the
target tenant through ``StorageService.Put``, so the copy is announced (``InstanceStored``),
indexed and audited like any other image; then ``InstanceDeidentified`` is published.

Pseudonyms are deterministic (same key, same input, same output), so running an operation again
writes the same objects: a failed or interrupted operation is repaired by starting it again.
Operations live in the memory of the instance that runs them (``GetOperation`` on another
replica answers NOT_FOUND); their effect is in storage, not here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from pacs.deid.v1 import deid_service_pb2 as pb
from pacs.events.v1 import deid_events_pb2 as events_pb
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.errors import InvalidArgumentError, NotFoundError, PacsError
from pacs_common.events import EventPublisher, now_rfc3339

from pacs_deid.deidentify import Deidentification, Result
from pacs_deid.options import Option

log = logging.getLogger(__name__)

TOPIC_DEID = "pacs.deid.v1"
"""InstanceDeidentified and ReidentificationPerformed."""


@dataclass
class _State:
    operation: pb.Operation
    tenant: str
    task: asyncio.Task[None] | None = None
    errors: list[str] = field(default_factory=list)


class Copier:
    """Reads one stored instance, de-identifies it and stores the copy in the target tenant."""

    def __init__(
        self, deid: Deidentification, storage: StorageClient, publisher: EventPublisher
    ) -> None:
        self.deid = deid
        self.storage = storage
        self.publisher = publisher

    async def copy(
        self,
        project: str,
        options: frozenset[Option],
        source: instance_pb2.InstanceRef,
        trigger: str,
        data: bytes | None = None,
    ) -> instance_pb2.InstanceRef:
        """De-identify ``source`` into the project's target tenant; returns the new ref."""
        payload = data if data is not None else await self.storage.get(source)
        kind = "rule" if trigger.startswith("rule:") else "operation"
        result: Result = await asyncio.to_thread(
            self.deid.deidentify, project, options, payload, kind
        )
        ds = result.dataset
        if not all(k in ds for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")):
            raise InvalidArgumentError("the instance lacks its study, series or SOP instance UID")
        target = instance_pb2.InstanceRef(
            tenant=self.deid.project(project).target_tenant,
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        )
        await self.storage.put(target, result.data)
        event = events_pb.InstanceDeidentified(
            project=project,
            target=target,
            source_tenant=source.tenant,
            method_codes=result.method_codes,
            trigger=trigger,
            deidentified_time=now_rfc3339(),
        )
        await self.publisher.publish(TOPIC_DEID, target.study_instance_uid, event)
        return target


class Operations:
    """The operations started on this instance."""

    def __init__(self, copier: Copier, concurrency: int) -> None:
        self.copier = copier
        self.concurrency = concurrency
        self._states: dict[str, _State] = {}

    def start(
        self, tenant: str, project: str, studies: list[str], options: frozenset[Option]
    ) -> pb.Operation:
        """Start copying ``studies`` of ``tenant``; returns the operation at once."""
        target = self.copier.deid.project(project).target_tenant
        name = f"operations/{uuid.uuid4()}"
        state = _State(
            pb.Operation(name=name, target_tenant=target, started_time=now_rfc3339()), tenant
        )
        self._states[name] = state
        state.task = asyncio.create_task(self._run(state, project, studies, options), name=name)
        return self.get(tenant, name)

    def get(self, tenant: str, name: str) -> pb.Operation:
        """An operation of ``tenant``. Raises NotFoundError for others' or unknown ones."""
        state = self._states.get(name)
        if state is None or state.tenant != tenant:
            raise NotFoundError(f"no operation {name!r}")
        operation = pb.Operation()
        operation.CopyFrom(state.operation)
        operation.errors[:] = state.errors[-100:]
        return operation

    def tenant_of(self, name: str) -> str:
        """The tenant that started an operation ("" when unknown)."""
        state = self._states.get(name)
        return state.tenant if state else ""

    async def _run(
        self, state: _State, project: str, studies: list[str], options: frozenset[Option]
    ) -> None:
        op = state.operation
        try:
            sources = []
            for study in studies:
                sources += [
                    info.instance
                    async for info in self.copier.storage.list_all(state.tenant, study)
                ]
                op.total = len(sources)
            semaphore = asyncio.Semaphore(self.concurrency)

            async def one(position: int, source: instance_pb2.InstanceRef) -> None:
                async with semaphore:
                    try:
                        await self.copier.copy(project, options, source, "operation")
                        op.completed += 1
                    except PacsError as exc:
                        op.failed += 1
                        state.errors.append(f"instance {position}: {exc.message}")

            await asyncio.gather(*(one(i, s) for i, s in enumerate(sources, 1)))
        except PacsError as exc:
            state.errors.append(f"listing the studies failed: {exc.message}")
        except Exception:
            log.exception("de-identification operation failed", extra={"operation": op.name})
            state.errors.append("internal error")
        finally:
            op.done = True

    async def stop(self) -> None:
        """Cancel running operations (starting them again repeats nothing harmful)."""
        tasks = [s.task for s in self._states.values() if s.task and not s.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
