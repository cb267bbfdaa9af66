"""The indexer reads a bounded prefix of a large object without pixel data, never the whole
object (pacs_indexer.header.HeaderReader, against the real storage service)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_indexer.header import HeaderReader
from pacs_storage.app import StorageApp
from pacs_testkit.storage import start_storage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

pytestmark = pytest.mark.integration

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


class _CountingStorage(StorageClient):
    """The real client, remembering the length of every ranged read (0 = whole object)."""

    lengths: list[int]

    async def get(
        self,
        instance: instance_pb2.InstanceRef,
        offset: int = 0,
        length: int = 0,
        *,
        version_id: str = "",
    ) -> bytes:
        self.lengths.append(length)
        return await super().get(instance, offset, length, version_id=version_id)


@pytest.fixture
async def storage(infra_env: dict[str, str], bucket_name: str) -> AsyncIterator[StorageApp]:
    app = await start_storage(bucket_name)
    yield app
    await app.stop()


def _pdf_object(size: int) -> bytes:
    dataset = Dataset()
    dataset.SOPClassUID = ENCAPSULATED_PDF
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientName = "Document^Large"
    dataset.add_new(0x00420011, "OB", b"%PDF" + b"\0" * size)
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


async def test_a_large_object_without_pixel_data_is_read_only_up_to_the_bound(
    storage: StorageApp, tenant: str
) -> None:
    data = _pdf_object(8 * 1024**2)
    ref = instance_ref_of(data, tenant)
    channel = open_channel(f"127.0.0.1:{storage.grpc_port}", client_tls())
    try:
        client = _CountingStorage(channel, timeout=30)
        client.lengths = []
        await client.put(ref, data)
        reader = HeaderReader(client, prefix_bytes=4096, max_header_bytes=256 * 1024)
        header = await reader.read(ref, len(data))
    finally:
        await channel.close(None)
    assert header.PatientName == "Document^Large"
    assert header.SOPInstanceUID == ref.sop_instance_uid
    assert 0 not in client.lengths, client.lengths  # never the whole 8 MiB object
    assert max(client.lengths) <= 256 * 1024
