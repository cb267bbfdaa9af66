"""Which action applies to an attribute, for a profile with options (PS3.15 E.1-1, E.3).

The Basic Profile column gives each attribute's action; an option that names the attribute
replaces it. When several chosen options name one attribute, the one that retains most wins
(K, then C, then U/D, then Z, then X): an option exists to keep something the Basic Profile
would remove, so combining two must not remove what either keeps.

The table's combined actions leave a choice to the de-identifier ("X unless Z or D is needed
for the IOD"); without the IOD tables at hand they are resolved once here so that the result
keeps the information out and the common IODs valid:

* ``X/Z`` and ``X/Z/D`` become Z: an empty value leaks nothing and keeps Type 2 attributes;
* ``X/D`` becomes X, and ``Z/D`` becomes Z, except for the attributes in :data:`NEED_VALUE`
  (Type 1 in common IODs), which get a dummy (D);
* ``X/Z/U*`` (Referenced/Source Image Sequence) keeps the sequence and replaces the UIDs in its
  items, since the references are what a derived object is about.
"""

from __future__ import annotations

from dataclasses import dataclass

from pacs_deid.options import Option
from pacs_deid.table import Table, TableRow, load_table

RETENTION_ORDER = ("K", "C", "U", "D", "Z", "X")

# Attributes whose combined action resolves to D: Type 1 in the IODs where they commonly occur
# (PS3.3 C.7.1.1 Patient ID is Type 2 but is replaced by a pseudonym anyway; C.7.6.1 / C.17.2
# Content Date and Time are Type 1 in SR documents and Type 2C/1 in image IODs).
NEED_VALUE = frozenset({0x00100020, 0x00080023, 0x00080033, 0x00700084, 0x00189919})


@dataclass(frozen=True)
class Action:
    """The resolved action for one table row (no combined codes left)."""

    code: str
    row: TableRow


def _resolve_combined(code: str, tag: int | None) -> str:
    if "/" not in code:
        return code
    if code == "X/Z/U*":
        return "U*"
    if code in ("X/Z", "X/Z/D"):
        return "Z"
    if code == "X/D":
        return "D" if tag in NEED_VALUE else "X"
    if code == "Z/D":
        return "D" if tag in NEED_VALUE else "Z"
    raise ValueError(f"unknown combined action {code}")


def choose(row: TableRow, options: frozenset[Option]) -> str:
    """The table's action for ``row`` under ``options`` (combined codes unresolved)."""
    candidates = [row.options[o.value] for o in options if o.value in row.options]
    if not candidates:
        return row.basic
    return min(candidates, key=lambda c: RETENTION_ORDER.index(c.split("/")[0]))


class Profile:
    """The Basic Profile with a set of options, resolved for fast lookup."""

    def __init__(self, options: frozenset[Option], table: Table | None = None) -> None:
        self.options = options
        self.table = table or load_table()
        self.by_tag: dict[int, Action] = {}
        for tag, row in self.table.by_tag.items():
            self.by_tag[tag] = Action(_resolve_combined(choose(row, options), tag), row)
        self.patterns = tuple(
            Action(_resolve_combined(choose(r, options), None), r) for r in self.table.patterns
        )
        private = self.table.private
        self.private = Action(choose(private, options), private)

    def action_for(self, tag: int) -> Action | None:
        """The resolved action for ``tag``; None when the table does not name it (keep)."""
        found = self.by_tag.get(tag)
        if found is not None:
            return found
        if tag & 0x00010000:
            return self.private
        group = tag >> 16
        if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
            for action in self.patterns:
                if action.row.matches(tag):
                    return action
        return None
