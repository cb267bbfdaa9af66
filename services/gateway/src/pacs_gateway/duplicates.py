"""What happens when a SOP Instance UID arrives again: the rule, per tenant.

A SOP Instance UID names one instance for ever (PS3.3 C.12.1.1.1), yet modalities and
migrations resend them, sometimes with changed bytes (a corrected header, a re-encoded
image), and broken ones reuse a UID for another instance. The rules, checked before storage is
called, for C-STORE and ``IngestService.Store`` alike (:class:`pacs_gateway.ingest.Ingest`):

* **identical bytes**: stored once; the sender gets Success (storage answers
  ``already_existed``; nothing is written).
* **different bytes, same study**: per tenant (:class:`DuplicatePolicy`):

  - ``new_version`` (default): storage keeps the earlier bytes as a version and the new ones
    become current; C-STORE answers the warning 0xB000 (PS3.4 B.2.3: stored, but not as
    sent would imply: the Error Comment says "stored as a new version"), IngestService
    STORED with the new version's id.
  - ``refuse``: nothing is written; C-STORE answers 0x0111 (Duplicate SOP Instance, PS3.7 C),
    IngestService REFUSED.

* **same SOP Instance UID under another study**: always refused (0x0111, REFUSED). Storage
  keys objects by study, so accepting it would leave two objects for one UID, one of them
  unreachable by UID (an orphan).

Where the earlier instance is found: this process's recently stored instances, else the
index (one ``FindInstances`` by SOP Instance UID), and, for ``refuse``, storage's HEAD of the
same address. Neither sees an instance another gateway process stored less than the index's
lag ago, nor two senders at the same moment: storage settles those atomically at S3 (a claim
per SOP Instance UID, :mod:`pacs_storage.uid_claims`; ``refuse_other_bytes`` and the grant's
create-only PUT) and answers ALREADY_EXISTS, which :class:`pacs_gateway.ingest.Ingest` turns
into :class:`DuplicateInstanceError`. While the indexer is unreachable the index lookup is
skipped (ingest keeps working; a warning is logged): storage's claim still refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from pacs.type.v1 import instance_pb2
from pacs_common.errors import AlreadyExistsError, NotFoundError, UnavailableError
from pydicom.dataset import Dataset

from pacs_gateway.dimse.c_find import Finder
from pacs_gateway.dimse.find_identifier import FindRequest, instance_ref_of_match

log = logging.getLogger(__name__)


class DuplicatePolicy(StrEnum):
    """What a tenant wants when a stored SOP Instance UID arrives with other bytes."""

    NEW_VERSION = "new_version"
    REFUSE = "refuse"


class DuplicateInstanceError(AlreadyExistsError):
    """The SOP Instance UID is stored already and the rules refuse this object."""


class InstanceLocator(Protocol):
    """Where a tenant's SOP Instance UID is stored, if anywhere (the index)."""

    async def locate(self, tenant: str, sop_instance_uid: str) -> instance_pb2.InstanceRef | None:
        """The indexed instance with this UID, None when there is none.

        Raises:
            UnavailableError: the index cannot be asked.
        """
        ...


class StoredHead(Protocol):
    """The current stored object at an address (the storage service's HEAD)."""

    async def head(self, instance: instance_pb2.InstanceRef) -> instance_pb2.ObjectInfo: ...


RecentLookup = Callable[[str, str], instance_pb2.InstanceRef | None]


class DuplicateGuard:
    """Applies the rules above to one object before it is stored."""

    def __init__(
        self,
        locator: InstanceLocator,
        storage: StoredHead,
        recent: RecentLookup,
        policy_of: Callable[[str], DuplicatePolicy],
    ) -> None:
        self._locator = locator
        self._storage = storage
        self._recent = recent
        self.policy_of = policy_of

    def refuses_new_versions(self, tenant: str) -> bool:
        """True when ``tenant`` refuses other bytes under a stored SOP Instance UID."""
        return self.policy_of(tenant) is DuplicatePolicy.REFUSE

    async def check(self, instance: instance_pb2.InstanceRef, sha256: str | None) -> None:
        """Refuse ``instance`` (with bytes of digest ``sha256``, when known) if the rules say so.

        Raises:
            DuplicateInstanceError: another study has this SOP Instance UID, or the tenant
                refuses new versions and other bytes are stored at this address.
        """
        earlier = self._recent(instance.tenant, instance.sop_instance_uid)
        if earlier is None:
            try:
                earlier = await self._locator.locate(instance.tenant, instance.sop_instance_uid)
            except UnavailableError as exc:
                log.warning(
                    "index unreachable: other-study check skipped",
                    extra={"error": exc.message},
                )
        if earlier is not None and earlier.study_instance_uid != instance.study_instance_uid:
            raise DuplicateInstanceError("SOP Instance UID already stored in another study")
        if self.refuses_new_versions(instance.tenant) and sha256 is not None:
            try:
                current = await self._storage.head(instance)
            except NotFoundError:
                return
            if current.sha256 != sha256:
                raise DuplicateInstanceError("SOP Instance UID already stored with other bytes")


def policy_table(default: str, by_tenant: dict[str, str]) -> Callable[[str], DuplicatePolicy]:
    """The policy of each tenant: ``by_tenant``'s entry, else ``default``.

    Raises:
        ValueError: a policy name is not one of :class:`DuplicatePolicy`.
    """
    fallback = DuplicatePolicy(default)
    table = {tenant: DuplicatePolicy(name) for tenant, name in by_tenant.items()}
    return lambda tenant: table.get(tenant, fallback)


class IndexLocator:
    """:class:`InstanceLocator` over the indexer (one IMAGE-level query by SOP Instance UID)."""

    def __init__(self, finder: Finder) -> None:
        self._finder = finder

    async def locate(self, tenant: str, sop_instance_uid: str) -> instance_pb2.InstanceRef | None:
        """The indexed instance with this UID, None when there is none.

        Raises:
            UnavailableError: the index cannot be asked.
        """
        match = {"SOPInstanceUID": sop_instance_uid, "SOPClassUID": ""}
        query = FindRequest("IMAGE", Dataset(), match).query(tenant, limit=1)
        page, _ = await self._finder.find("IMAGE", query)
        return instance_ref_of_match(page[0], tenant) if page else None
