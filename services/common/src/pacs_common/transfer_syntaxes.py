"""Which transfer syntax to send an instance in, given what the receiver accepted.

One rule for every way out (C-MOVE, C-GET, and DICOMweb later), so that they agree
(issue 12, "On retrieve"): an instance goes as stored when its syntax was accepted; otherwise
the transcoder converts it, always when the conversion is lossless (lossless to lossless, or
the decoding of a lossy instance, which loses nothing more), and into a lossy syntax only when
the instance already is lossy, or when the receiver accepted nothing else and the caller's
setting allows it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from pydicom import uid

LOSSLESS_OUT: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.HTJ2KLossless,
    uid.JPEGLSLossless,
    uid.RLELossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLossless,
    uid.JPEG2000Lossless,
    uid.HTJ2KLosslessRPCL,
    uid.DeflatedExplicitVRLittleEndian,
)
"""Lossless syntaxes the transcoder writes, in order of preference: uncompressed first (only
decoding, understood everywhere), then the fastest codecs."""

LOSSY_OUT: tuple[str, ...] = (
    uid.JPEGLSNearLossless,
    uid.HTJ2K,
    uid.JPEG2000,
    uid.JPEGExtended12Bit,
    uid.JPEGBaseline8Bit,
)
"""Lossy syntaxes the transcoder writes, least lossy first."""

_LOSSY_STORED = {*LOSSY_OUT, uid.JPEG2000MC}


def is_lossy(transfer_syntax_uid: str) -> bool:
    """True when an instance in this syntax is lossy (PS3.5 8: the lossy processes; video)."""
    return transfer_syntax_uid in _LOSSY_STORED or transfer_syntax_uid.startswith(
        "1.2.840.10008.1.2.4.10"
    )


@dataclass(frozen=True)
class Choice:
    """The syntax to send in, and whether the transcoder must be asked to allow lossy output."""

    transfer_syntax_uid: str
    transcode: bool
    allow_lossy: bool = False


def choose(
    stored: str, accepted: Collection[str], *, lossy_fallback: bool = False
) -> Choice | None:
    """The syntax to send an instance stored in ``stored`` to a receiver that accepted
    ``accepted`` (for the instance's SOP class), or None when no accepted syntax will do.

    Args:
        lossy_fallback: allow a lossy syntax for a lossless instance when the receiver accepted
            no lossless one (a deployment setting; off by default).
    """
    if stored in accepted:
        return Choice(stored, transcode=False)
    for candidate in LOSSLESS_OUT:
        if candidate in accepted:
            return Choice(candidate, transcode=True)
    if is_lossy(stored) or lossy_fallback:
        for candidate in LOSSY_OUT:
            if candidate in accepted:
                return Choice(candidate, transcode=True, allow_lossy=True)
    return None
