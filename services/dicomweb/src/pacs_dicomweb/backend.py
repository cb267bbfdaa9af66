"""The services behind the HTTP facade: the indexer's QueryService and StorageService.

Both are reached over mutual TLS as the identity ``dicomweb``; each request names the tenant
the caller's token (or the loopback rule) gave, which the indexer accepts from a trusted service
(``PACS_AUTH_TRUSTED_SERVICES`` includes ``dicomweb``) and storage from an allowed peer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import grpc
from pacs.type.v1 import instance_pb2
from pacs_common.clients.direct import DirectStorage
from pacs_common.clients.query import QueryClient
from pacs_common.clients.storage import StorageClient
from pacs_common.grpc_client import open_channel

from pacs_dicomweb.settings import DicomwebSettings


class ObjectReader(Protocol):
    """Whole-object reads: storage's read grants or its streaming Get."""

    async def open(
        self, instance: instance_pb2.InstanceRef, *, version_id: str = ""
    ) -> tuple[instance_pb2.ObjectInfo, AsyncIterator[bytes]]: ...


class Backend:
    """Channels and clients of one DICOMweb process; :meth:`close` once at stop."""

    def __init__(self, settings: DicomwebSettings) -> None:
        self._channels: list[grpc.aio.Channel] = []
        query_channel = open_channel(settings.indexer_target, settings.grpc_tls)
        storage_channel = open_channel(settings.storage_target, settings.grpc_tls)
        self._channels = [query_channel, storage_channel]
        self.query = QueryClient(query_channel, timeout=settings.query_timeout)
        self.storage = StorageClient(storage_channel, timeout=settings.storage_timeout)
        # Reads go straight to S3 through storage's read grants (verified here) unless the
        # service cannot reach S3; then through storage's streaming Get.
        self.direct = DirectStorage(self.storage, ca_certs=settings.s3_ca_bundle)
        self.objects: ObjectReader = self.direct if settings.read_path == "grant" else self.storage

    async def close(self) -> None:
        """Close the channels (calls in flight are cancelled)."""
        for channel in self._channels:
            await channel.close(grace=None)
        self._channels = []
        self.direct.close()
