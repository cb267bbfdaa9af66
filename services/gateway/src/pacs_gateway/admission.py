"""Who may open an association, and which tenant an accepted caller works in.

Decided once per association, when the A-ASSOCIATE-RQ arrives (pynetdicom's EVT_REQUESTED),
from the calling AE title, the source address and, over TLS, the client certificate subject.
A refused caller gets an A-ASSOCIATE-RJ, rejected-permanent, source "DICOM UL service-user"
(PS3.8 9.3.4, Table 9-21), and never reaches a DIMSE handler.
"""

from __future__ import annotations

import ipaddress
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

# PS3.8 Table 9-21, A-ASSOCIATE-RJ Reason/Diag. with source 1 (DICOM UL service-user).
REASON_NO_REASON_GIVEN = 0x01
REASON_CALLING_AE_NOT_RECOGNIZED = 0x03
REASON_CALLED_AE_NOT_RECOGNIZED = 0x07
RESULT_REJECTED_PERMANENT = 0x01
RESULT_REJECTED_TRANSIENT = 0x02
SOURCE_SERVICE_USER = 0x01
SOURCE_PROVIDER_PRESENTATION = 0x03
REASON_LOCAL_LIMIT = 0x02
"""With source 3: local-limit-exceeded (PS3.8 Table 9-21)."""


@dataclass(frozen=True)
class Caller:
    """An admitted association requestor."""

    tenant: str
    calling_ae_title: str
    address: str
    site: str | None = None
    user: str | None = None
    """The verified DICOM User Identity's subject (PS3.7 D.3.3.7), when one was negotiated."""
    roles: frozenset[str] | None = None
    """The roles of that identity; None without one (the site registry alone admits)."""


@dataclass(frozen=True)
class Rejection:
    """Why an association is refused; ``reason`` is a PS3.8 Table 9-21 diagnostic, ``kind``
    the metrics label (unknown_calling_ae, unknown_called_ae, address_not_allowed,
    tls_identity, other)."""

    reason: int
    explanation: str
    kind: str = "other"


@dataclass(frozen=True)
class AssociationRequest:
    """What is known about a requestor when its A-ASSOCIATE-RQ arrives."""

    calling_ae_title: str
    called_ae_title: str
    address: str
    tls_subject: str | None = None
    """RFC 4514 subject of the verified client certificate, when the association uses TLS."""
    tls: bool = False


CallerOf = Callable[[Any], Caller | None]
"""The admitted caller of an association, None if it was never admitted (:meth:`Callers.get`)."""


class AdmissionPolicy(Protocol):
    """Decides on an association request."""

    def admit(self, request: AssociationRequest) -> Caller | Rejection: ...


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_in(address: str, networks: Iterable[Network]) -> bool:
    """True if ``address`` (an IPv4/IPv6 literal, possibly IPv4-mapped IPv6) is in a network."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def called_ae_rejection(
    called_ae_title: str | None, request: AssociationRequest
) -> Rejection | None:
    """The rejection of a request addressed to another AE title than ours (when we have one)."""
    if called_ae_title and request.called_ae_title != called_ae_title:
        return Rejection(
            REASON_CALLED_AE_NOT_RECOGNIZED, "called AE title is not ours", "unknown_called_ae"
        )
    return None


class NetworkPolicy:
    """The embedded default: any calling AE title, from the allowed networks only."""

    def __init__(
        self, allowed_networks: Iterable[str], tenant: str, called_ae_title: str | None
    ) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self._tenant = tenant
        self._called_ae_title = called_ae_title

    def admit(self, request: AssociationRequest) -> Caller | Rejection:
        """Admit callers from the allowed networks into the default tenant.

        An address outside the allowed networks has no Table 9-21 reason of its own; we answer
        "no-reason-given" so that a probe learns nothing about which AE titles exist.
        """
        if wrong_called_ae := called_ae_rejection(self._called_ae_title, request):
            return wrong_called_ae
        if not address_in(request.address, self._networks):
            return Rejection(
                REASON_NO_REASON_GIVEN, "source address not allowed", "address_not_allowed"
            )
        return Caller(self._tenant, request.calling_ae_title, request.address)


class Callers:
    """The admitted caller of each live association (weakly keyed: no clean-up needed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_association: weakref.WeakKeyDictionary[Any, Caller] = weakref.WeakKeyDictionary()

    def set(self, association: Any, caller: Caller) -> None:
        """Remember the caller of ``association``."""
        with self._lock:
            self._by_association[association] = caller

    def get(self, association: Any) -> Caller | None:
        """The caller of ``association``; None if it was never admitted."""
        with self._lock:
            return self._by_association.get(association)
