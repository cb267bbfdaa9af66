"""Which rules of a tenant match one stored instance.

The instance is seen through its header (the Part 10 bytes before the pixel data that
``InstanceStored`` carries, or that the router reads from storage when the event has none),
so any attribute of the header can be matched, not only the columns the index keeps.

Values match with DICOM wildcard matching (PS3.4 C.2.2.2.4): ``*`` any run of characters,
``?`` one character, everything else literally and case-sensitively; a multi-valued attribute
matches when any of its values does. The time-of-day window is checked against the time the
instance was stored (``ObjectInfo.stored_time``), not the time the router reads the event, so
that a router catching up after an outage routes exactly what it would have routed live.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from pacs_router.rules import Match, Rule, TimeWindow


@lru_cache(maxsize=1024)
def _pattern(value: str) -> re.Pattern[str]:
    """A DICOM wildcard value as a regular expression (PS3.4 C.2.2.2.4)."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value)
    return re.compile("".join(parts), re.DOTALL)


def wildcard_match(patterns: Iterable[str], values: Sequence[str]) -> bool:
    """True when any value matches any pattern."""
    return any(_pattern(p).fullmatch(v) for p in patterns for v in values)


def values_of(header: Dataset, name: str) -> list[str]:
    """The values of one attribute (keyword or GGGGEEEE tag) as strings; [] when absent or
    empty. File meta attributes (group 0002) are looked up in the file meta."""
    tag = tag_for_keyword(name)
    tag = Tag(int(name, 16)) if tag is None else Tag(tag)
    source = header.file_meta if tag.group == 0x0002 and hasattr(header, "file_meta") else header
    if source is None or tag not in source:
        return []
    value = source[tag].value
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, MultiValue)) else [value]
    return [str(item).strip() for item in items]


def in_window(window: TimeWindow, stored: datetime) -> bool:
    """Whether ``stored`` (aware) falls in the daily window, in the window's time zone."""
    local: time = stored.astimezone(ZoneInfo(window.timezone)).time()
    if window.start <= window.end:
        return window.start <= local < window.end
    return local >= window.start or local < window.end  # spans midnight


def calling_ae_of(header: Dataset, sending_ae_title: str) -> list[str]:
    """The calling AE title that delivered an instance: the one storage recorded with the
    object (``ObjectInfo.sending_ae_title``, set by the gateway), else the file meta's Sending
    (0002,0017) or Source (0002,0016) Application Entity Title (PS3.10 Table 7.1-1) that
    another writer may have set."""
    if sending_ae_title:
        return [sending_ae_title]
    return values_of(header, "00020017") or values_of(header, "00020016")


def matches(match: Match, header: Dataset, stored: datetime, sending_ae_title: str = "") -> bool:
    """Whether an instance satisfies every criterion of ``match``."""
    if match.calling_ae and not wildcard_match(
        match.calling_ae, calling_ae_of(header, sending_ae_title)
    ):
        return False
    checks: list[tuple[list[str], str]] = [
        (match.modality, "Modality"),
        (match.sop_class_uid, "SOPClassUID"),
    ]
    for name, wanted in match.attributes.items():
        checks.append(([wanted] if isinstance(wanted, str) else wanted, name))
    for patterns, name in checks:
        if patterns and not wildcard_match(patterns, values_of(header, name)):
            return False
    return match.time_of_day is None or in_window(match.time_of_day, stored)


def matching_rules(
    rules: Sequence[Rule], header: Dataset, stored: datetime, sending_ae_title: str = ""
) -> list[Rule]:
    """The rules whose criteria the instance satisfies, in file order."""
    return [rule for rule in rules if matches(rule.match, header, stored, sending_ae_title)]


def parse_stored_time(value: str) -> datetime:
    """``ObjectInfo.stored_time`` (RFC 3339 UTC) as an aware datetime; now when unparsable."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now().astimezone()
    return parsed if parsed.tzinfo else parsed.astimezone()
