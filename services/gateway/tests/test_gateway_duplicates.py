"""The same SOP Instance UID arriving again (pacs_gateway.duplicates), through C-STORE and the
real storage service and indexer: identical bytes succeed, other bytes become a new version
with warning 0xB000 or are refused with 0x0111 per tenant, another study is always refused."""

from __future__ import annotations

import asyncio
import copy
import io
from pathlib import Path

import pytest
from gateway_helpers import sample_path, scu_store_dataset, wait_indexed
from pacs.type.v1 import instance_pb2
from pacs_common.clients.direct import DirectStorage
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import NotFoundError
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_gateway.dimse import codes
from pacs_gateway.duplicates import DuplicateGuard, DuplicateInstanceError, DuplicatePolicy
from pacs_gateway.ingest import Ingest, RecentInstances, StoredInstance
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _instance() -> Dataset:
    """CT_small with fresh UIDs (every test its own instance)."""
    dataset = dcmread(sample_path("CT_small.dcm"))
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


def _changed(dataset: Dataset) -> Dataset:
    changed = copy.deepcopy(dataset)
    changed.ImageComments = "corrected"
    return changed


async def _store(port: int, dataset: Dataset) -> int:
    response = await asyncio.to_thread(scu_store_dataset, port, dataset, ExplicitVRLittleEndian)
    return int(response.Status)


async def _stored_bytes(storage_port: int, tenant: str, dataset: Dataset) -> bytes:
    channel = open_channel(f"127.0.0.1:{storage_port}", client_tls())
    try:
        ref = instance_pb2.InstanceRef(
            tenant=tenant,
            study_instance_uid=dataset.StudyInstanceUID,
            series_instance_uid=dataset.SeriesInstanceUID,
            sop_instance_uid=dataset.SOPInstanceUID,
        )
        return await StorageClient(channel, timeout=30).get(ref)
    finally:
        await channel.close(None)


async def test_other_bytes_become_a_new_version_with_a_warning(
    start_connected_gateway, storage_app, tenant: str
) -> None:
    gateway = await start_connected_gateway(default_tenant=tenant)
    original = _instance()
    assert await _store(gateway.dicom_port, original) == codes.SUCCESS
    assert await _store(gateway.dicom_port, original) == codes.SUCCESS  # identical: success
    changed = _changed(original)
    assert await _store(gateway.dicom_port, changed) == codes.STORED_AS_NEW_VERSION
    current = dcmread(io.BytesIO(await _stored_bytes(storage_app.grpc_port, tenant, original)))
    assert current.ImageComments == "corrected"


async def test_a_tenant_that_refuses_new_versions_keeps_the_first_bytes(
    start_connected_gateway, storage_app, tenant: str
) -> None:
    gateway = await start_connected_gateway(
        default_tenant=tenant, duplicate_policy_by_tenant={tenant: "refuse"}
    )
    original = _instance()
    assert await _store(gateway.dicom_port, original) == codes.SUCCESS
    assert await _store(gateway.dicom_port, original) == codes.SUCCESS  # identical: success
    assert await _store(gateway.dicom_port, _changed(original)) == codes.DUPLICATE_SOP_INSTANCE
    current = dcmread(io.BytesIO(await _stored_bytes(storage_app.grpc_port, tenant, original)))
    assert current.get("ImageComments") != "corrected"


async def test_the_same_uid_under_another_study_is_refused(
    start_connected_gateway, tenant: str, tmp_path: Path
) -> None:
    """Refused by the gateway that stored the first (its recent instances) and by another
    gateway process that only knows the index."""
    first_gateway = await start_connected_gateway(default_tenant=tenant)
    other_gateway = await start_connected_gateway(default_tenant=tenant)
    original = _instance()
    assert await _store(first_gateway.dicom_port, original) == codes.SUCCESS
    moved = copy.deepcopy(original)
    moved.StudyInstanceUID = generate_uid()
    assert await _store(first_gateway.dicom_port, moved) == codes.DUPLICATE_SOP_INSTANCE

    path = tmp_path / "original.dcm"
    original.save_as(path, enforce_file_format=True)
    await wait_indexed(first_gateway.dicom_port, [path], within_s=90)
    assert await _store(other_gateway.dicom_port, moved) == codes.DUPLICATE_SOP_INSTANCE


class _NoIndexedInstance:
    """The index's answer when neither sender's instance is indexed yet."""

    async def locate(self, tenant: str, sop_instance_uid: str) -> None:
        return None


@pytest.mark.parametrize("write_path", ["grant", "stream"])
async def test_other_bytes_at_the_same_moment_are_refused_when_the_tenant_refuses(
    storage_app, tenant: str, write_path: str
) -> None:
    """Two senders, one SOP Instance UID, other bytes, at the same moment: the rules' HEAD of
    storage finds nothing for either (both ask before either writes), so the first write to
    reach S3 must win and the other be refused, not kept as a new version; through write
    grants (C-STORE) and through storage's streamed Put (IngestService uploads). Real storage,
    S3 and Kafka; only the moment of the two HEADs is arranged."""
    channel = open_channel(f"127.0.0.1:{storage_app.grpc_port}", client_tls("gateway"))
    storage = StorageClient(channel, timeout=30)
    direct = DirectStorage(storage)
    both_asked = asyncio.Barrier(2)

    class HeadThenWaitForTheOther:
        async def head(self, instance: instance_pb2.InstanceRef) -> instance_pb2.ObjectInfo:
            try:
                return await storage.head(instance)
            finally:
                await asyncio.wait_for(both_asked.wait(), 30)

    guard = DuplicateGuard(
        _NoIndexedInstance(),
        HeadThenWaitForTheOther(),
        lambda _tenant, _uid: None,
        lambda _tenant: DuplicatePolicy.REFUSE,
    )
    granted = direct if write_path == "grant" else None
    ingest = Ingest(storage, 30, RecentInstances(), guard, granted=granted)
    original = _instance()
    sent = [_part10(original), _part10(_changed(original))]
    ref = instance_ref_of(sent[0], tenant)
    try:
        results = await asyncio.gather(
            *(ingest.put(ref, data) for data in sent), return_exceptions=True
        )
        current = await storage.get(ref)
    finally:
        direct.close()
        await channel.close(None)

    stored = [r for r in results if isinstance(r, StoredInstance)]
    refused = [r for r in results if isinstance(r, DuplicateInstanceError)]
    assert len(stored) == 1 and len(refused) == 1, results
    assert not stored[0].new_version
    assert current == sent[results.index(stored[0])], "the refused bytes were written"


@pytest.mark.parametrize("write_path", ["grant", "stream"])
async def test_another_study_is_refused_before_the_index_or_this_process_knows_the_uid(
    storage_app, tenant: str, write_path: str
) -> None:
    """Another gateway process stored the UID a moment ago: it is not in this process's
    recent instances and not yet in the index (its lag), so only storage can refuse it
    (pacs_storage.uid_claims). Nothing of the refused object may be stored."""
    channel = open_channel(f"127.0.0.1:{storage_app.grpc_port}", client_tls("gateway"))
    storage = StorageClient(channel, timeout=30)
    direct = DirectStorage(storage)

    def a_gateway_process() -> Ingest:
        guard = DuplicateGuard(
            _NoIndexedInstance(),
            storage,
            lambda _tenant, _uid: None,
            lambda _tenant: DuplicatePolicy.NEW_VERSION,
        )
        granted = direct if write_path == "grant" else None
        return Ingest(storage, 30, RecentInstances(), guard, granted=granted)

    original = _instance()
    moved = copy.deepcopy(original)
    moved.StudyInstanceUID = generate_uid()
    moved.SeriesInstanceUID = generate_uid()
    moved_ref = instance_ref_of(_part10(moved), tenant)
    try:
        await a_gateway_process().put(instance_ref_of(_part10(original), tenant), _part10(original))
        with pytest.raises(DuplicateInstanceError, match="another study"):
            await a_gateway_process().put(moved_ref, _part10(moved))
        with pytest.raises(NotFoundError):
            await storage.head(moved_ref)
    finally:
        direct.close()
        await channel.close(None)


def _part10(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
