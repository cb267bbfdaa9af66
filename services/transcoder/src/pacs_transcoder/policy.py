"""The on-store compression policy: which stored instances get a new representation.

A rule names a tenant (or ``*``), a modality (or ``*``), the transfer syntax to write, whether
that syntax may be lossy, and which stored syntaxes it applies to (``uncompressed`` by default,
like Orthanc's ``IngestTranscodingOfUncompressed``; ``any-lossless`` also re-encodes losslessly
compressed instances). The first matching rule applies; a rule with an empty ``transfer_syntax``
keeps matching instances as they are (for example XA).

Why the policy cannot loop on its own output: a rule never applies to an instance already in
its target syntax, and a rule's sources never include its target (checked at start-up), so the
version the transcoder writes is never matched again by the rule that wrote it; lossy instances
are never re-encoded on store. Nothing is ever made lossy unless a rule says ``lossy: true`` and
names a lossy syntax (a lossy syntax without ``lossy: true`` is refused at start-up).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pacs_transcoder.syntaxes import SYNTAXES, UNCOMPRESSED, is_lossy_syntax

Sources = Literal["uncompressed", "any-lossless"]


class PolicyRule(BaseModel):
    """One on-store rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field("*", description="tenant, or * for every tenant")
    modality: str = Field("*", description="Modality (0008,0060), or * for any")
    transfer_syntax: str = Field("", description="syntax to write; empty = keep as stored")
    lossy: bool = Field(False, description="explicitly allow a lossy transfer_syntax")
    sources: Sources = Field("uncompressed", description="which stored syntaxes it applies to")

    def matches(self, tenant: str, modality: str) -> bool:
        """True when the rule is about this tenant and modality."""
        return self.tenant in ("*", tenant) and self.modality.upper() in ("*", modality.upper())

    def applies_to(self, stored_syntax: str) -> bool:
        """True when an instance stored in ``stored_syntax`` should be rewritten."""
        if not self.transfer_syntax or stored_syntax == self.transfer_syntax:
            return False
        if is_lossy_syntax(stored_syntax):
            return False
        if self.sources == "uncompressed":
            return stored_syntax in UNCOMPRESSED
        return stored_syntax in SYNTAXES

    @property
    def name(self) -> str:
        """A short name for events and logs."""
        return f"{self.tenant}/{self.modality}->{self.transfer_syntax or 'keep'}"


DEFAULT_RULES: tuple[PolicyRule, ...] = (
    PolicyRule(modality="CT", transfer_syntax="1.2.840.10008.1.2.4.201"),
    PolicyRule(modality="MR", transfer_syntax="1.2.840.10008.1.2.4.201"),
    PolicyRule(modality="XA", transfer_syntax=""),
    PolicyRule(modality="US", transfer_syntax="1.2.840.10008.1.2.4.80"),
)
"""CT and MR to HTJ2K lossless, XA kept, US to JPEG-LS lossless (the issue's example)."""


def check_rules(rules: list[PolicyRule]) -> list[PolicyRule]:
    """Reject rules that could lose data unasked or could never be written.

    Raises:
        ValueError: unknown target syntax, or a lossy one without ``lossy: true``.
    """
    for rule in rules:
        if not rule.transfer_syntax:
            continue
        if rule.transfer_syntax not in SYNTAXES:
            raise ValueError(f"rule {rule.name}: the transcoder cannot write that syntax")
        if SYNTAXES[rule.transfer_syntax].lossy and not rule.lossy:
            raise ValueError(f'rule {rule.name}: a lossy syntax needs "lossy": true')
    return rules


def rule_for(rules: Sequence[PolicyRule], tenant: str, modality: str) -> PolicyRule | None:
    """The first rule matching the tenant and modality."""
    return next((rule for rule in rules if rule.matches(tenant, modality)), None)
