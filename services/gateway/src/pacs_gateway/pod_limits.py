"""The gateway's settings turned into the bounds its transport layer enforces.

Kept apart from ``app`` so that the settings-to-limits rules (what ``max_pdu_size`` 0 means)
live in one small place, with :mod:`pacs_gateway.peer_limits` and
:class:`pacs_gateway.event_reactor.TransportLimits`.
"""

from __future__ import annotations

from pacs_gateway.event_reactor import TransportLimits
from pacs_gateway.peer_limits import LimitSettings
from pacs_gateway.settings import GatewaySettings


def limit_settings(settings: GatewaySettings) -> LimitSettings:
    """The pod-wide connection and association limits."""
    return LimitSettings(
        max_connections_per_address=settings.max_connections_per_address,
        max_pending_per_address=settings.max_pending_per_address,
        max_pending_connections=settings.max_pending_connections,
        pod_max_associations=settings.pod_max_associations,
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
