"""HTTP range requests on bulk data (RFC 9110 14.2): one ``bytes=first-last`` range.

Several ranges in one request (a multipart/byteranges answer) are not supported: the whole
value is sent instead, which RFC 9110 allows a server to do.
"""

from __future__ import annotations

import re

from pacs_dicomweb.http_errors import RangeNotSatisfiableError

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte range asked for, or None for the whole value.

    Raises:
        RangeNotSatisfiableError: a range that starts past the end (HTTP 416).
    """
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None  # several ranges or another unit: ignore (send everything)
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:  # suffix range: the last N bytes
        count = int(last_text)
        if count == 0:
            raise RangeNotSatisfiableError(f"empty suffix range of a {size}-byte value")
        return max(size - count, 0), size - 1
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiableError(f"range {header} is outside the {size}-byte value")
    return first, last
