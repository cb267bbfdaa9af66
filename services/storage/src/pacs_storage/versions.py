"""Version ids, the metadata stored with every object, and ObjectInfo built from it.

The bucket keeps versions itself (see :mod:`pacs_storage.keys`) instead of relying on S3 bucket
versioning: versitygw's posix backend only versions when started with ``--versioning-dir``, and
other S3-compatible stores differ again, while this layout behaves the same on every one. A
version id is ``{UTC time}-{first 16 hex of the SHA-256}``: sortable by age, and readable.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from pacs.type.v1 import instance_pb2

from pacs_storage.bucket import StoredObject

log = logging.getLogger(__name__)

# User metadata (x-amz-meta-*) written with every object; S3 lower-cases the names.
META_SHA256 = "sha256"
META_SOP_CLASS = "sop-class-uid"
META_TRANSFER_SYNTAX = "transfer-syntax-uid"
META_VERSION = "version-id"
META_STORED = "stored-time"
META_SENDING_AE = "sending-ae-title"

# An AE title (PS3.5 6.2, VR AE): at most 16 characters of the default repertoire without
# backslash or control characters; S3 metadata holds only such ASCII anyway.
_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{0,16}")


def rfc3339(moment: datetime) -> str:
    """UTC time in RFC 3339 with milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_version_id(moment: datetime, sha256_hex: str) -> str:
    """A version id: time first (sortable), then a prefix of the content hash."""
    return f"{moment.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{sha256_hex[:16]}"


def b64_digest(digest: bytes) -> str:
    """The base64 form of a digest that S3 checksum headers carry."""
    return base64.b64encode(digest).decode("ascii")


def sha256_b64(body: bytes) -> str:
    """The base64 SHA-256 of a small body written in one PUT (S3 verifies it)."""
    return b64_digest(hashlib.sha256(body).digest())


def checked_ae_title(value: str) -> str:
    """``value`` stripped if it is a valid AE title (PS3.5 6.2), else empty: the title is a
    label recorded with the object, and an image is never refused for it (the gateway only
    passes titles pynetdicom accepted at association time)."""
    title = value.strip()
    if _AE_TITLE.fullmatch(title):
        return title
    log.warning("sending AE title not recorded: not a valid AE title")
    return ""


def object_metadata(
    ref: instance_pb2.InstanceRef,
    sha256_hex: str,
    version_id: str,
    stored_time: str,
    sending_ae_title: str = "",
) -> dict[str, str]:
    """User metadata recorded with an object."""
    metadata = {
        META_SHA256: sha256_hex,
        META_SOP_CLASS: ref.sop_class_uid,
        META_TRANSFER_SYNTAX: ref.transfer_syntax_uid,
        META_VERSION: version_id,
        META_STORED: stored_time,
    }
    if sending_ae_title:
        metadata[META_SENDING_AE] = sending_ae_title
    return metadata


def version_of(stored: StoredObject) -> str:
    """The version id of a stored object (one written by an older release has none: derive a
    stable one from its ETag)."""
    recorded = stored.metadata.get(META_VERSION, "")
    if recorded:
        return recorded
    return "legacy-" + "".join(ch for ch in stored.etag if ch.isalnum())[:40]


def object_info(
    ref: instance_pb2.InstanceRef, stored: StoredObject, size: int | None = None
) -> instance_pb2.ObjectInfo:
    """ObjectInfo of a stored object; descriptors come from its metadata."""
    meta: Mapping[str, str] = stored.metadata
    instance = instance_pb2.InstanceRef(
        tenant=ref.tenant,
        study_instance_uid=ref.study_instance_uid,
        series_instance_uid=ref.series_instance_uid,
        sop_instance_uid=ref.sop_instance_uid,
        sop_class_uid=meta.get(META_SOP_CLASS, ""),
        transfer_syntax_uid=meta.get(META_TRANSFER_SYNTAX, ""),
    )
    stored_time = meta.get(META_STORED, "")
    if not stored_time and stored.last_modified is not None:
        stored_time = rfc3339(stored.last_modified)
    return instance_pb2.ObjectInfo(
        instance=instance,
        key=stored.key,
        size=stored.size if size is None else size,
        sha256=meta.get(META_SHA256, ""),
        version_id=version_of(stored),
        stored_time=stored_time,
        sending_ae_title=meta.get(META_SENDING_AE, ""),
    )
