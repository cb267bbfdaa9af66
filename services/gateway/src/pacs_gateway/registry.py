"""The site registry: which DICOM peers exist, which tenant they belong to, where to send.

A YAML file (validated with pydantic) lists tenants, their sites, each site's calling AE titles
with the networks they call from (and, optionally, the TLS client certificate subject they must
present), and the C-MOVE / Storage Commitment destinations of each site. The file is re-read
when its modification time changes; a file that fails validation is reported and ignored, the
previous registry stays in force. See the service README for an example.

Validation refuses, besides malformed entries: tenant names that storage would refuse (the one
rule of :mod:`pacs_common.tenants`); one AE title on two overlapping networks; and two tenants
whose callers come from overlapping networks unless every such caller names the TLS client
certificate subject it must present, each a different one. The source address then cannot
tell the tenants apart, and a mistaken or spoofed AE title would put one tenant's images into
the other's: the certificate is what keeps them apart.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Self

import yaml
from pacs_common.errors import InvalidArgumentError
from pacs_common.tenants import check_tenant
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pacs_gateway.admission import (
    REASON_CALLING_AE_NOT_RECOGNIZED,
    AssociationRequest,
    Caller,
    Network,
    Rejection,
    address_in,
    called_ae_rejection,
)
from pacs_gateway.settings import check_ae_title

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallerEntry(_Strict):
    """One AE title allowed to open associations, from given networks."""

    ae_title: str
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(min_length=1)
    tls_subject: str | None = Field(
        None, description="RFC 4514 subject the client certificate must have; implies TLS"
    )
    require_tls: bool = False

    @field_validator("ae_title")
    @classmethod
    def _ae_title_valid(cls, value: str) -> str:
        return check_ae_title(value)

    @property
    def needs_tls(self) -> bool:
        """True if this caller may only come over DICOM TLS."""
        return self.require_tls or self.tls_subject is not None


class Destination(_Strict):
    """A peer the gateway opens associations to (C-MOVE destination, commitment reports)."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    tls: bool = False
    tls_ca_file: Path | None = Field(None, description="CA bundle to verify the peer")
    tls_cert_file: Path | None = Field(None, description="our client certificate, if asked")
    tls_key_file: Path | None = None

    @field_validator("ae_title")
    @classmethod
    def _ae_title_valid(cls, value: str) -> str:
        return check_ae_title(value)


DestinationOf = Callable[[str, str], Destination | None]
"""A registered destination: (tenant, AE title) -> where to open the association, or None."""


class Site(_Strict):
    """A hospital or imaging site of a tenant."""

    callers: list[CallerEntry] = Field(default_factory=list)
    destinations: list[Destination] = Field(default_factory=list)


class Tenant(_Strict):
    """A tenant: its sites."""

    sites: dict[str, Site] = Field(default_factory=dict)


class _Placed(NamedTuple):
    """One network of one caller entry, and where it is in the file."""

    tenant: str
    where: str
    caller: CallerEntry
    network: Network


def _overlap(a: Network, b: Network) -> bool:
    return a.version == b.version and a.overlaps(b)


class Registry(_Strict):
    """The whole registry file."""

    tenants: dict[str, Tenant] = Field(default_factory=dict)

    @field_validator("tenants")
    @classmethod
    def _tenant_names_valid(cls, value: dict[str, Tenant]) -> dict[str, Tenant]:
        for name in value:
            try:
                check_tenant(name)
            except InvalidArgumentError as exc:
                raise ValueError(f"tenant {name!r}: {exc.message}") from exc
        return value

    @model_validator(mode="after")
    def _unambiguous(self) -> Self:
        """An AE title may appear several times only from non-overlapping networks, so that
        every (AE title, address) pair names at most one site."""
        seen: dict[str, list[tuple[str, Network]]] = {}
        for tenant_name, tenant in self.tenants.items():
            for site_name, site in tenant.sites.items():
                for caller in site.callers:
                    for network in caller.networks:
                        for where, other in seen.get(caller.ae_title, []):
                            if _overlap(network, other):
                                raise ValueError(
                                    f"AE title {caller.ae_title} is registered twice for "
                                    f"overlapping networks ({where} and {tenant_name}/{site_name})"
                                )
                        seen.setdefault(caller.ae_title, []).append(
                            (f"{tenant_name}/{site_name}", network)
                        )
                titles = [d.ae_title for d in site.destinations]
                if len(titles) != len(set(titles)):
                    raise ValueError(f"duplicate destination AE title in {tenant_name}/{site_name}")
        return self

    @model_validator(mode="after")
    def _tenants_apart_on_shared_networks(self) -> Self:
        """Callers of two tenants on overlapping networks must each name a TLS client subject,
        and not the same one (see the module docstring)."""
        placed = [
            _Placed(tenant_name, f"{tenant_name}/{site_name} {caller.ae_title}", caller, network)
            for tenant_name, tenant in self.tenants.items()
            for site_name, site in tenant.sites.items()
            for caller in site.callers
            for network in caller.networks
        ]
        for a, b in itertools.combinations(placed, 2):
            if a.tenant == b.tenant or not _overlap(a.network, b.network):
                continue
            shared = f"tenants {a.tenant} and {b.tenant} share a network ({a.network}, {b.network})"
            unnamed = [p.where for p in (a, b) if not p.caller.tls_subject]
            if unnamed:
                raise ValueError(
                    f"{shared}: their callers there must each name a tls_subject, "
                    f"which {' and '.join(unnamed)} does not"
                )
            if _same_subject(a.caller.tls_subject or "", b.caller.tls_subject):
                raise ValueError(
                    f"{shared}: {a.where} and {b.where} name the same tls_subject; "
                    "each tenant needs certificates of its own"
                )
        return self

    def destination(self, tenant: str, ae_title: str) -> Destination | None:
        """A destination AE of ``tenant`` (any of its sites)."""
        for site in self.tenants.get(tenant, Tenant()).sites.values():
            for destination in site.destinations:
                if destination.ae_title == ae_title.strip():
                    return destination
        return None


def load_registry(path: Path) -> Registry:
    """Read and validate a registry file.

    Raises:
        ValueError: the file is not valid YAML or does not follow the schema.
        OSError: the file cannot be read.
    """
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Registry.model_validate(content)
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from exc


class RegistryPolicy:
    """Admission by the site registry: a known AE title, from its networks, over TLS with the
    right certificate subject where required; the caller then works in its site's tenant."""

    def __init__(self, registry: Registry, called_ae_title: str | None) -> None:
        self.registry = registry
        self._called_ae_title = called_ae_title

    def admit(self, request: AssociationRequest) -> Caller | Rejection:
        """Decide on one association request (rejections cite PS3.8 Table 9-21)."""
        if wrong_called_ae := called_ae_rejection(self._called_ae_title, request):
            return wrong_called_ae
        for tenant_name, tenant in self.registry.tenants.items():
            for site_name, site in tenant.sites.items():
                for entry in site.callers:
                    if entry.ae_title != request.calling_ae_title:
                        continue
                    if not address_in(request.address, entry.networks):
                        continue
                    if entry.needs_tls and not request.tls:
                        return Rejection(
                            REASON_CALLING_AE_NOT_RECOGNIZED, "TLS required", "tls_identity"
                        )
                    if entry.tls_subject is not None and not _same_subject(
                        entry.tls_subject, request.tls_subject
                    ):
                        return Rejection(
                            REASON_CALLING_AE_NOT_RECOGNIZED,
                            "client certificate mismatch",
                            "tls_identity",
                        )
                    return Caller(tenant_name, entry.ae_title, request.address, site_name)
        # Unknown AE title, or a known one from an address it is not registered for: the
        # (AE title, address) pair is not recognized.
        return Rejection(
            REASON_CALLING_AE_NOT_RECOGNIZED,
            "calling AE title not registered for this address",
            "unknown_calling_ae",
        )


def _same_subject(expected: str, actual: str | None) -> bool:
    if actual is None:
        return False

    def normal(subject: str) -> list[str]:
        return sorted(part.strip() for part in subject.split(","))

    return normal(expected) == normal(actual)


class RegistryWatcher:
    """Keeps the current registry, re-reading the file when its mtime changes (polling)."""

    def __init__(self, path: Path, poll_s: float, called_ae_title: str | None) -> None:
        self.path = path
        self._poll_s = poll_s
        self._called_ae_title = called_ae_title
        self._mtime = self.path.stat().st_mtime_ns
        self._policy = RegistryPolicy(load_registry(path), called_ae_title)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-watch", daemon=True)

    @property
    def policy(self) -> RegistryPolicy:
        """The policy of the registry currently in force."""
        return self._policy

    def start(self) -> None:
        """Start polling the file."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def check(self) -> bool:
        """Reload if the file changed; True if a new registry is now in force."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError as exc:
            log.error(
                "site registry unreadable; keeping the previous one", extra={"error": str(exc)}
            )
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            registry = load_registry(self.path)
        except (OSError, ValueError) as exc:
            log.error("site registry invalid; keeping the previous one", extra={"error": str(exc)})
            return False
        self._policy = RegistryPolicy(registry, self._called_ae_title)
        log.info("site registry reloaded", extra={"tenants": len(registry.tenants)})
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            self.check()
