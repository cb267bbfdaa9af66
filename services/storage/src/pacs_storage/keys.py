"""The object key layout of the bucket, and the checks that keep requests inside it.

Layout (one bucket, tenant first so that IAM policies, lifecycle rules and replication can be
scoped per tenant with a plain prefix)::

    {tenant}/{study_uid}/{series_uid}/{sop_uid}.dcm                      current version
    {tenant}/{study_uid}/{series_uid}/{sop_uid}.versions/{version}.dcm   earlier versions
    _uploads/{upload_id}                                                 multipart staging

UIDs contain only digits and dots (PS3.5 9.1) and tenants only ``[a-z0-9-]`` (the rule of
:mod:`pacs_common.tenants`), so a UID can never inject a ``/`` or ``..`` and the three kinds of
keys cannot collide. Earlier versions do not live under ``{sop_uid}.dcm/`` because a
POSIX-backed S3 server (versitygw) cannot hold both a file ``x`` and a directory ``x/``.
"""

from __future__ import annotations

import re
import uuid

from pacs.type.v1 import instance_pb2
from pacs_common.dicom import is_valid_uid
from pacs_common.errors import InvalidArgumentError
from pacs_common.tenants import check_tenant

OBJECT_SUFFIX = ".dcm"
VERSIONS_SUFFIX = ".versions"
STAGING_PREFIX = "_uploads/"

# Version ids are ours (see :func:`pacs_storage.versions.new_version_id`); nothing else passes.
_VERSION_ID = re.compile(r"^[0-9A-Za-z-]{1,80}$")
_UID = r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*"
_CURRENT_KEY = re.compile(
    rf"^(?P<tenant>[a-z0-9-]+)/(?P<study>{_UID})/(?P<series>{_UID})/(?P<sop>{_UID})\.dcm$"
)


def _check_uid(name: str, value: str) -> None:
    if not value:
        raise InvalidArgumentError(f"{name} is required")
    if not is_valid_uid(value):
        raise InvalidArgumentError(f"{name} is not a valid UID (PS3.5 9.1)")


def check_instance(ref: instance_pb2.InstanceRef) -> None:
    """Check the address part of an InstanceRef: tenant, study, series and SOP instance UIDs.

    Raises:
        InvalidArgumentError: a part is missing or malformed.
    """
    check_tenant(ref.tenant)
    _check_uid("study_instance_uid", ref.study_instance_uid)
    _check_uid("series_instance_uid", ref.series_instance_uid)
    _check_uid("sop_instance_uid", ref.sop_instance_uid)


def check_descriptors(ref: instance_pb2.InstanceRef) -> None:
    """Check the optional SOP Class and Transfer Syntax UIDs when present."""
    if ref.sop_class_uid and not is_valid_uid(ref.sop_class_uid):
        raise InvalidArgumentError("sop_class_uid is not a valid UID (PS3.5 9.1)")
    if ref.transfer_syntax_uid and not is_valid_uid(ref.transfer_syntax_uid):
        raise InvalidArgumentError("transfer_syntax_uid is not a valid UID (PS3.5 9.1)")


def check_version_id(version_id: str) -> None:
    """Raise :class:`InvalidArgumentError` unless ``version_id`` could be one of ours."""
    if not _VERSION_ID.match(version_id):
        raise InvalidArgumentError("version_id is malformed")


def _base(ref: instance_pb2.InstanceRef) -> str:
    return f"{ref.tenant}/{ref.study_instance_uid}/{ref.series_instance_uid}/{ref.sop_instance_uid}"


def object_key(ref: instance_pb2.InstanceRef) -> str:
    """Key of the current version of an instance."""
    return _base(ref) + OBJECT_SUFFIX


def versions_prefix(ref: instance_pb2.InstanceRef) -> str:
    """Prefix under which the earlier versions of an instance are kept."""
    return _base(ref) + VERSIONS_SUFFIX + "/"


def version_key(ref: instance_pb2.InstanceRef, version_id: str) -> str:
    """Key of one earlier version of an instance."""
    return versions_prefix(ref) + version_id + OBJECT_SUFFIX


def staging_key() -> str:
    """A fresh key for a multipart upload whose final key is decided when it completes."""
    return f"{STAGING_PREFIX}{uuid.uuid4().hex}"


def list_prefix(tenant: str, study_uid: str = "", series_uid: str = "") -> str:
    """Prefix of a tenant, one of its studies, or one series of that study.

    Raises:
        InvalidArgumentError: a part is malformed, or a series is given without its study.
    """
    check_tenant(tenant)
    if series_uid and not study_uid:
        raise InvalidArgumentError("series_instance_uid needs study_instance_uid")
    prefix = f"{tenant}/"
    if study_uid:
        _check_uid("study_instance_uid", study_uid)
        prefix += f"{study_uid}/"
    if series_uid:
        _check_uid("series_instance_uid", series_uid)
        prefix += f"{series_uid}/"
    return prefix


def instance_of_key(key: str) -> instance_pb2.InstanceRef | None:
    """The instance whose current version lives at ``key``; None for any other key."""
    match = _CURRENT_KEY.match(key)
    if match is None:
        return None
    return instance_pb2.InstanceRef(
        tenant=match["tenant"],
        study_instance_uid=match["study"],
        series_instance_uid=match["series"],
        sop_instance_uid=match["sop"],
    )
