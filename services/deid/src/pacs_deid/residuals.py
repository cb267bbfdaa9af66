"""Check a de-identified dataset against the table: what PS3.15 E.1-1 says must be gone or
replaced and still is not. Used by the CLI's summary, the benchmark (to count what another tool
leaves behind) and the tests.

A violation is: an attribute whose action is X still present; one whose action is Z with a
value (Patient's Name and ID may carry a pseudonym); a UID whose action is U not under 2.25
(the root pseudonyms use, PS3.5 B.2); a private attribute when the profile removes them; no
Patient Identity Removed = YES.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pacs_deid.profile import Profile

PSEUDONYM_TAGS = (0x00100010, 0x00100020)


def violations(ds: Dataset, profile: Profile, *, allow_private: bool = False) -> list[str]:
    """Every way ``ds`` falls short of ``profile`` (attribute tags and rules, never values)."""
    found: list[str] = []
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        found.append("(0012,0062) PatientIdentityRemoved is not YES")
    _check(ds, profile, found, allow_private, "")
    return found


def _check(ds: Dataset, profile: Profile, found: list[str], allow_private: bool, at: str) -> None:
    for elem in ds:
        tag = int(elem.tag)
        where = f"{at}({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if tag & 0x00010000:
            if not allow_private and profile.private.code == "X":
                found.append(f"{where} private attribute present")
            continue
        action = profile.action_for(tag)
        code = action.code if action else None
        if code == "X":
            found.append(f"{where} {elem.keyword} present (X)")
        elif code == "Z" and tag not in PSEUDONYM_TAGS and not _empty(elem.value, elem.VR):
            found.append(f"{where} {elem.keyword} has a value (Z)")
        elif code == "U" and elem.VR == "UI" and not _all_pseudonymous(elem.value):
            found.append(f"{where} {elem.keyword} not replaced (U)")
        if elem.VR == "SQ" and code not in ("X", "Z"):
            for index, item in enumerate(elem.value or ()):
                _check(item, profile, found, allow_private, f"{where}[{index}]")


def _empty(value: object, vr: str) -> bool:
    if vr == "SQ":
        return not value
    return value is None or value in ("", b"")


def _all_pseudonymous(value: object) -> bool:
    values = value if isinstance(value, MultiValue | list) else [value]
    return all(not v or str(v).startswith("2.25.") for v in values)
