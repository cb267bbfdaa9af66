"""The gateway's settings turned into the bounds and rules its reliability parts enforce.

Kept apart from ``app`` so that the settings-to-limits rules (what ``max_pdu_size`` 0 means,
which tenant has which duplicate policy) live in one small place, beside
:mod:`pacs_gateway.peer_limits`, :class:`pacs_gateway.event_reactor.TransportLimits` and
:mod:`pacs_gateway.duplicates`.
"""

from __future__ import annotations

from pacs_common.clients.storage import StorageClient

from pacs_gateway.dimse.c_find import Finder
from pacs_gateway.duplicates import DuplicateGuard, IndexLocator, policy_table
from pacs_gateway.event_reactor import TransportLimits
from pacs_gateway.ingest import RecentInstances
from pacs_gateway.peer_limits import LimitSettings
from pacs_gateway.settings import GatewaySettings


def limit_settings(settings: GatewaySettings) -> LimitSettings:
    """The pod-wide connection and association limits."""
    return LimitSettings(
        max_connections_per_address=settings.max_connections_per_address,
        max_pending_per_address=settings.max_pending_per_address,
        max_pending_connections=settings.max_pending_connections,
        pod_max_associations=settings.pod_max_associations,
        process_max_associations=settings.max_associations,
    )


PDU_SLACK = 1024
"""Bytes a P-DATA-TF may exceed the announced Maximum Length Received by: implementations
differ on whether it counts the PDV item headers (PS3.8 D.1 leaves room to read it either
way), and refusing a conforming sender over 6 bytes would be worse than reading a few more."""


def transport_limits(settings: GatewaySettings) -> TransportLimits:
    """The PDU and data set bounds; an unlimited announced PDU size is still bounded by the
    data set limit (a P-DATA-TF cannot usefully be longer than the largest data set)."""
    pdu = (settings.max_pdu_size or settings.max_dataset_bytes) + PDU_SLACK
    return TransportLimits(max_pdu_length=pdu, max_dataset_bytes=settings.max_dataset_bytes)


def duplicate_guard(
    settings: GatewaySettings, finder: Finder, storage: StorageClient, recent: RecentInstances
) -> DuplicateGuard:
    """The duplicate SOP Instance UID rules with each tenant's policy."""
    return DuplicateGuard(
        IndexLocator(finder),
        storage,
        recent.get,
        policy_table(settings.duplicate_policy, dict(settings.duplicate_policy_by_tenant)),
    )
