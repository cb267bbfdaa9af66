"""The header that ``InstanceStored`` carries, cut from the first bytes of a Put.

Consumers (the indexer first) need an instance's header, not its pixels. Storage has the
object's bytes while it writes them, so it hands the header on in the event instead of having
every consumer read it back with a ranged Get. Only the first ``cap + 4`` bytes of a Put are
kept for this (:func:`pacs_storage.upload.receive_object`), never the whole object; where the
header ends is decided by :func:`pacs_common.dicom.split_header`, the same function the indexer
uses on its own ranged reads. A header longer than the cap, or bytes that are not readable
DICOM, give an empty header: consumers then read the object from storage.
"""

from __future__ import annotations

import logging

from pacs_common.dicom import UnreadableDicomError, split_header

log = logging.getLogger(__name__)

# A prefix that ends exactly where the header ends is recognised by the Pixel Data tag that
# follows it, so four bytes beyond the cap are kept.
_TAG_BYTES = 4


def prefix_to_keep(cap: int) -> int:
    """How many first bytes of a Put to keep for a header of at most ``cap`` bytes."""
    return cap + _TAG_BYTES if cap > 0 else 0


def event_header(prefix: bytes, size: int, cap: int) -> bytes:
    """The header for ``InstanceStored``: the object's bytes before its Pixel Data element, or
    the whole object when that has none (or is deflated); empty when that is over ``cap``
    bytes or not readable DICOM.

    Args:
        prefix: the object's first bytes (at least ``prefix_to_keep(cap)`` of them, or all).
        size: the object's size.
        cap: the largest header to return.
    """
    if cap <= 0 or not prefix:
        return b""
    complete = len(prefix) >= size
    try:
        parsed = split_header(prefix, complete)
    except UnreadableDicomError:
        # Storage stores whatever it is given; the header is then simply not carried.
        log.debug("object is not readable DICOM; no header in its event")
        return b""
    if parsed is None:
        return b""  # the header goes on past the bytes kept: longer than the cap
    _, length = parsed
    return prefix[:length] if length <= cap else b""
