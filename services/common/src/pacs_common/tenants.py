"""The one rule for tenant names, applied wherever a tenant name enters the system.

A tenant is a DNS-label-like name (1-63 characters of ``a-z``, ``0-9`` and ``-``, not starting
or ending with ``-``): it is the first part of every object key in storage and the prefix that
IAM policies, lifecycle rules and replication are scoped by, so it can never carry a ``/`` or
``..``. Storage checks it on every request; the gateway checks the tenants of its site registry
when the registry loads, so that a registry cannot name a tenant storage would refuse.
"""

from __future__ import annotations

import re

from pacs_common.errors import InvalidArgumentError

_TENANT = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def check_tenant(tenant: str) -> None:
    """Raise :class:`InvalidArgumentError` unless ``tenant`` is a valid tenant name."""
    if not tenant:
        raise InvalidArgumentError("tenant is required")
    if not _TENANT.match(tenant):
        raise InvalidArgumentError("tenant must be 1-63 characters of a-z, 0-9 and '-'")
