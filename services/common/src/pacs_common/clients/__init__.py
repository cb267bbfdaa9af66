"""Clients of every cloudpacs gRPC service, in one place (no service imports another's package).

- :class:`~pacs_common.clients.storage.StorageClient` (``pacs.storage.v1.StorageService``)
- :class:`~pacs_common.clients.query.QueryClient` (``pacs.query.v1.QueryService``, the indexer)
- :class:`~pacs_common.clients.ingest.IngestClient` (``pacs.ingest.v1.IngestService``, the gateway)
- :class:`~pacs_common.clients.deid.DeidClient` (``pacs.deid.v1.DeidService``)

Each takes a channel from :func:`pacs_common.grpc_client.open_channel` (mutual TLS). Failed calls
are turned into the project's error hierarchy by :mod:`pacs_common.clients.errors`, the one
translation of gRPC statuses on the calling side.
"""
