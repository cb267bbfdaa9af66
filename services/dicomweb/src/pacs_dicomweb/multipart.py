"""multipart/related bodies (RFC 2387) as PS3.18 8.7.1 uses them, both ways.

Writing: a fresh random boundary per response (a fixed one can occur inside binary parts,
UMEssen/DICOM-RST#59), parts streamed as they are produced. Reading (STOW-RS): the streaming
parser of ``python-multipart`` (it takes any boundary, not only form-data), with lenient header
parsing (quoted or bare ``boundary``/``type``, dcmjs#113).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable

CRLF = b"\r\n"


def new_boundary() -> str:
    """A boundary that cannot occur by chance in the parts."""
    return f"cloudpacs-{uuid.uuid4().hex}"


def content_type(boundary: str, part_type: str) -> str:
    """The response's Content-Type header (PS3.18 8.7.1.2)."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def part_header(boundary: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The delimiter and headers that open one part."""
    lines = [f"--{boundary}".encode()]
    lines += [f"{name}: {value}".encode() for name, value in headers]
    return CRLF.join(lines) + CRLF + CRLF


def closing(boundary: str) -> bytes:
    """The close delimiter ending the body."""
    return f"--{boundary}--".encode() + CRLF


async def stream_parts(
    boundary: str, parts: AsyncIterator[tuple[list[tuple[str, str]], AsyncIterator[bytes]]]
) -> AsyncIterator[bytes]:
    """A multipart body from ``(headers, chunks)`` parts, produced one part at a time."""
    async for headers, chunks in parts:
        yield part_header(boundary, headers)
        async for chunk in chunks:
            if chunk:
                yield chunk
        yield CRLF
    yield closing(boundary)


def header_parameters(value: str) -> tuple[str, dict[str, str]]:
    """A media type and its parameters, lower-cased names, quotes removed."""
    main, *rest = value.split(";")
    params: dict[str, str] = {}
    for item in rest:
        name, _, val = item.partition("=")
        if name.strip():
            params[name.strip().lower()] = val.strip().strip('"')
    return main.strip().lower(), params
