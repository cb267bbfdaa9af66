"""Which private attributes are safe to keep under the Retain Safe Private Option (PS3.15
E.3.10).

Two sources, both explicit:

* the dataset's own Private Data Element Characteristics Sequence (0008,0300), where the
  creator of a block declares it SAFE, or MIXED with the elements that are not identifying
  listed in Non-Identifying Private Elements (0008,0304) (PS3.3 C.12.1.1.7);
* a configured list of (private creator, group, element offset) known to be safe at this site,
  optionally only for some modalities.

Anything else private is removed: "safe" is a claim someone must have made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel
from pydicom.dataset import Dataset


class SafePrivateEntry(BaseModel):
    """One configured safe private attribute (element offset is the low byte, 0x00-0xFF)."""

    creator: str
    group: int
    element: int
    modalities: list[str] = []


@dataclass
class SafePrivate:
    """The safe-private decision for one project."""

    entries: Iterable[SafePrivateEntry | dict[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        entries = [SafePrivateEntry.model_validate(e) for e in self.entries]
        self._configured: dict[tuple[str, int, int], frozenset[str]] = {
            (e.creator.strip().upper(), e.group, e.element): frozenset(
                m.upper() for m in e.modalities
            )
            for e in entries
        }

    def is_safe(self, ds: Dataset, creator: str, group: int, offset: int) -> bool:
        """Whether element ``offset`` of ``creator``'s block in ``group`` may be kept."""
        modalities = self._configured.get((creator.upper(), group, offset))
        if modalities is not None:
            return not modalities or str(ds.get("Modality", "")).upper() in modalities
        return _declared_safe(ds, creator, group, offset)


def _declared_safe(ds: Dataset, creator: str, group: int, offset: int) -> bool:
    for item in ds.get("PrivateDataElementCharacteristicsSequence", []) or []:
        if item.get("PrivateGroupReference") != group:
            continue
        if str(item.get("PrivateCreatorReference", "")).strip() != creator:
            continue
        status = str(item.get("BlockIdentifyingInformationStatus", "")).upper()
        if status == "SAFE":
            return True
        if status == "MIXED":
            safe = item.get("NonidentifyingPrivateElements", []) or []
            values = (
                safe
                if isinstance(safe, list | tuple)
                else list(safe)
                if hasattr(safe, "__iter__")
                else [safe]
            )
            return offset in {int(v) for v in values}
    return False
