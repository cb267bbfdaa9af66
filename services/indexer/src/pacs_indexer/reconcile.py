"""Rebuild and check a tenant's index against storage.

Storage is the source of truth (DESIGN.md: a crash at any step is repaired by re-consuming or
reindexing from storage). ``reindex`` re-reads every stored instance of a tenant through the same
path the event handler uses; ``check`` compares the two sets of SOP Instance UIDs both ways.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from sqlalchemy import select

from pacs_indexer.consumer import IndexEventHandler
from pacs_indexer.database import Database
from pacs_indexer.rejection import rejected_uids
from pacs_indexer.schema import Instance, Series, Study

log = logging.getLogger(__name__)


@dataclass
class ReindexProgress:
    """Where a reindex stands."""

    total: int
    processed: int = 0
    failed: int = 0


@dataclass
class IndexCheck:
    """What storage and the index disagree on."""

    stored_count: int = 0
    indexed_count: int = 0
    not_indexed: list[instance_pb2.InstanceRef] = field(default_factory=list)
    not_in_storage: list[instance_pb2.InstanceRef] = field(default_factory=list)


async def stored_instances(storage: StorageClient, tenant: str) -> list[instance_pb2.InstanceRef]:
    """Every instance storage holds for ``tenant`` (current versions only)."""
    return [info.instance async for info in storage.list_all(tenant)]


def indexed_instances(database: Database, tenant: str) -> list[instance_pb2.InstanceRef]:
    """Every instance the index holds for ``tenant``."""
    statement = (
        select(Study.study_instance_uid, Series.series_instance_uid, Instance.sop_instance_uid)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .where(Instance.tenant == tenant)
    )
    with database.session() as session:
        return [
            instance_pb2.InstanceRef(
                tenant=tenant,
                study_instance_uid=study,
                series_instance_uid=series,
                sop_instance_uid=sop,
            )
            for study, series, sop in session.execute(statement)
        ]


async def reindex(
    handler: IndexEventHandler, storage: StorageClient, tenant: str, every: int = 50
) -> AsyncIterator[ReindexProgress]:
    """Index every stored instance of ``tenant`` again; yields progress every ``every``
    instances and once at the end. Upserts are idempotent, so a rerun is harmless.

    Instances go ``every`` at a time: their descriptions (``Head``) and headers are read from
    storage concurrently and written in one transaction (:meth:`IndexEventHandler.index_objects`).
    When a group fails (an object removed meanwhile, a header that does not parse), its
    instances are indexed one by one, so that only the failing ones are counted and logged.
    """
    refs = await stored_instances(storage, tenant)
    progress = ReindexProgress(total=len(refs))
    yield progress
    for start in range(0, len(refs), every):
        group = refs[start : start + every]
        try:
            infos = await asyncio.gather(*(storage.head(ref) for ref in group))
            await handler.index_objects(infos)
            progress.processed += len(group)
        except Exception:  # retried one by one below, where each failure is logged
            for ref in group:
                await _reindex_one(handler, storage, ref, progress)
        yield progress


async def _reindex_one(
    handler: IndexEventHandler,
    storage: StorageClient,
    ref: instance_pb2.InstanceRef,
    progress: ReindexProgress,
) -> None:
    try:
        await handler.index_object(await storage.head(ref))
        progress.processed += 1
    except Exception as exc:
        progress.failed += 1
        log.warning(
            "reindex: instance not indexed",
            extra={"sop_instance_uid": ref.sop_instance_uid, "error": repr(exc)},
        )


def _rejected(database: Database, tenant: str) -> set[str]:
    with database.session() as session:
        return rejected_uids(session.connection(), tenant)


async def check(database: Database, storage: StorageClient, tenant: str) -> IndexCheck:
    """Compare storage and the index for ``tenant`` by SOP Instance UID."""
    stored = await stored_instances(storage, tenant)
    indexed = await asyncio.to_thread(indexed_instances, database, tenant)
    # Instances rejected by an IOCM rejection note are kept out of the index on purpose.
    hidden = await asyncio.to_thread(_rejected, database, tenant)
    stored_uids = {ref.sop_instance_uid for ref in stored}
    indexed_uids = {ref.sop_instance_uid for ref in indexed}
    return IndexCheck(
        stored_count=len(stored_uids),
        indexed_count=len(indexed_uids),
        not_indexed=[ref for ref in stored if ref.sop_instance_uid not in indexed_uids | hidden],
        not_in_storage=[ref for ref in indexed if ref.sop_instance_uid not in stored_uids],
    )


@dataclass
class Reconciler:
    """What ``Reindex`` and ``CheckIndex`` need: the index, the event path and storage."""

    database: Database
    handler: IndexEventHandler
    storage: StorageClient
