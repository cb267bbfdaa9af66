"""cloudpacs storage service: owns the S3 bucket, object keys, checksums and versions.

``StorageService`` (``pacs.storage.v1``) stores Part 10 objects under a per-tenant key layout,
verifies SHA-256 on the way in and out, keeps earlier versions, and announces every write and
delete on Kafka before it answers. Other services use
:class:`pacs_common.clients.storage.StorageClient`.
"""
