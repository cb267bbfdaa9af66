"""Accept headers and transfer syntax negotiation for WADO-RS (PS3.18 8.7.3, 8.7.4).

The rule: serve the **stored** bytes whenever the client accepts them (``transfer-syntax=*``,
the stored syntax named, or a wildcard media type); otherwise produce Explicit VR Little
Endian by decoding (:mod:`pacs_dicomweb.pixels`), which every decoder pydicom has can do. Other
target syntaxes need an encoder: that is where the transcoder service
(``pacs_common.clients.transcode.TranscodeClient``) will plug in; until then they get 406.

The parser is lenient (quoted or bare parameters, any case), because real clients differ:
dicomweb-client quotes ``type``, Cornerstone sends ``type=application/octet-stream``, OHIF
may omit the quotes (``omitQuotationForMultipartRequest``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pacs_dicomweb.http_errors import NotAcceptableError

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
ANY = "*"

# PS3.18 Table 8.7.3-2..-5: the media type of each transfer syntax for frames and bulk data.
MEDIA_OF_SYNTAX: dict[str, str] = {
    EXPLICIT_VR_LITTLE_ENDIAN: "application/octet-stream",
    IMPLICIT_VR_LITTLE_ENDIAN: "application/octet-stream",
    "1.2.840.10008.1.2.2": "application/octet-stream",
    "1.2.840.10008.1.2.1.99": "application/octet-stream",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}
# PS3.18 Table 8.7.3-5: the default transfer syntax of a media type without the parameter.
DEFAULT_SYNTAX: dict[str, str] = {
    "application/dicom": EXPLICIT_VR_LITTLE_ENDIAN,
    "application/octet-stream": EXPLICIT_VR_LITTLE_ENDIAN,
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/x-jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",
    "image/jphc": "1.2.840.10008.1.2.4.201",
}
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}


@dataclass(frozen=True)
class MediaRange:
    """One element of an Accept header: ``multipart/related; type=...`` unwrapped."""

    media_type: str
    """The (part) media type, lower case: ``application/dicom``, ``image/jpeg``, ``*/*``."""
    transfer_syntax: str | None
    """The ``transfer-syntax`` parameter, ``*``, or None when absent."""
    multipart: bool
    quality: float = 1.0


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first (q-values, then order)."""
    ranges: list[MediaRange] = []
    for element in _split_outside_quotes(header or "", ","):
        fields = [f.strip() for f in _split_outside_quotes(element, ";")]
        if not fields or not fields[0]:
            continue
        params: dict[str, str] = {}
        for item in fields[1:]:
            name, _, value = item.partition("=")
            params[name.strip().lower()] = value.strip().strip('"').strip()
        outer = fields[0].lower()
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if outer == "multipart/related":
            inner = params.get("type", "application/dicom").lower() or "*/*"
            ranges.append(MediaRange(inner, params.get("transfer-syntax"), True, quality))
        else:
            ranges.append(MediaRange(outer, params.get("transfer-syntax"), False, quality))
    ranges.sort(key=lambda r: -r.quality)
    return ranges


@dataclass(frozen=True)
class Choice:
    """What to send: the media type of each part and the transfer syntax of its bytes."""

    media_type: str
    transfer_syntax: str
    multipart: bool

    @property
    def transcode(self) -> bool:
        """Whether the bytes must be produced (not served as stored); see :attr:`stored`."""
        return self.transfer_syntax != self.stored

    stored: str = ""


def _matches(pattern: str, media_type: str) -> bool:
    if pattern in ("*/*", "*"):
        return True
    if pattern.endswith("/*"):
        return media_type.startswith(pattern[:-1])
    return _ALIASES.get(pattern, pattern) == _ALIASES.get(media_type, media_type)


def choose(
    ranges: Iterable[MediaRange],
    stored_syntax: str,
    *,
    instance: bool,
    default: MediaRange,
) -> Choice:
    """Pick the representation of a resource (instances when ``instance``, else frames or bulk
    data) for a client accepting ``ranges``; ``default`` stands for an empty Accept.

    Raises:
        NotAcceptableError: nothing acceptable can be produced (PS3.18 8.7.3: 406).
    """
    candidates = list(ranges) or [default]
    for wanted in candidates:
        choice = _choice(wanted, stored_syntax, instance=instance)
        if choice is not None:
            return choice
    raise NotAcceptableError(
        "none of the accepted media types/transfer syntaxes can be produced for this resource "
        f"(stored as {stored_syntax}; available: as stored, or {EXPLICIT_VR_LITTLE_ENDIAN})"
    )


def _choice(wanted: MediaRange, stored: str, *, instance: bool) -> Choice | None:  # noqa: PLR0911  (one return per outcome of PS3.18 8.7.3)
    stored_media = "application/dicom" if instance else MEDIA_OF_SYNTAX.get(stored, "")
    native_media = "application/dicom" if instance else "application/octet-stream"
    syntax = wanted.transfer_syntax
    wildcard = wanted.media_type in ("*/*", "*") or wanted.media_type.endswith("/*")
    if syntax == ANY or (syntax is None and wildcard):
        if not instance and wanted.media_type == "application/octet-stream":
            # Cornerstone's loader asks exactly this and picks its decoder by the part's
            # transfer-syntax parameter: the stored bytes, labelled with their syntax.
            return Choice(wanted.media_type, stored, wanted.multipart, stored)
        if stored_media and _matches(wanted.media_type, stored_media):
            return Choice(stored_media, stored, wanted.multipart, stored)
        if _matches(wanted.media_type, native_media):
            return Choice(native_media, EXPLICIT_VR_LITTLE_ENDIAN, wanted.multipart, stored)
        return None
    if syntax is None:
        syntax = DEFAULT_SYNTAX.get(_ALIASES.get(wanted.media_type, wanted.media_type))
        if syntax is None:
            return None
    if syntax == stored and (instance or _matches(wanted.media_type, stored_media)):
        media = wanted.media_type if not wildcard else (stored_media or native_media)
        return Choice(media, stored, wanted.multipart, stored)
    if syntax == EXPLICIT_VR_LITTLE_ENDIAN and _matches(wanted.media_type, native_media):
        return Choice(native_media, EXPLICIT_VR_LITTLE_ENDIAN, wanted.multipart, stored)
    return None


def part_content_type(choice: Choice) -> str:
    """The Content-Type of one body part (the transfer syntax named, PS3.18 8.7.3.1)."""
    return f"{choice.media_type}; transfer-syntax={choice.transfer_syntax}"
