"""The transfer syntaxes the transcoder reads and writes, and what each one implies.

Which library does which syntax (decoding goes through pydicom's pixel backend, which picks the
plugin; encoding is called directly so that every parameter the standard constrains is ours):

- Implicit/Explicit VR Little Endian; Explicit VR Big Endian (read only): pydicom and numpy.
- Deflated Explicit VR Little Endian (PS3.5 A.5): pydicom inflates; zlib deflates, streamed.
- RLE Lossless (PS3.5 G): pylibjpeg-rle both ways (encoding through pydicom's
  ``RLELosslessEncoder``).
- JPEG Baseline, Extended, Lossless Process 14 and SV1 (PS3.5 A.4.1, 8.2.1): pylibjpeg-libjpeg
  decodes; imagecodecs ``jpeg8_encode`` encodes (libjpeg-turbo 3: 8/12-bit DCT, 2-16-bit
  lossless).
- JPEG-LS lossless and near-lossless (PS3.5 A.4.3, 8.2.3): pyjpegls (CharLS) both ways,
  through pydicom's ``JPEGLS*Encoder`` (imagecodecs' CharLS where pyjpegls' buffer is too small).
- JPEG 2000 lossless and lossy (PS3.5 A.4.4, 8.2.4): pylibjpeg-openjpeg decodes; imagecodecs
  ``jpeg2k_encode`` (OpenJPEG too) encodes, because it exposes the number of resolutions that
  small images need.
- HTJ2K lossless, lossless RPCL and lossy (PS3.5 A.4.11, 8.2.14): pylibjpeg-openjpeg decodes
  (OpenJPEG >= 2.5 reads HT code-blocks); imagecodecs ``htj2k_encode`` (OpenJPH) encodes, the
  only HTJ2K encoder with Python bindings on PyPI.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pydicom import uid


class Codec(enum.Enum):
    """The encoder family a target syntax uses."""

    NATIVE = "native"
    DEFLATE = "deflate"
    RLE = "rle"
    JPEG_LOSSY = "jpeg-lossy"
    JPEG_LOSSLESS = "jpeg-lossless"
    JPEGLS = "jpeg-ls"
    J2K = "jpeg2000"
    HTJ2K = "htj2k"


@dataclass(frozen=True)
class Syntax:
    """What one transfer syntax means for the transcoder."""

    uid: str
    codec: Codec
    lossy: bool
    """Encoding in it loses information (PS3.5 8: the lossy processes)."""
    method: str = ""
    """Lossy Image Compression Method (0028,2114) when lossy (PS3.3 C.7.6.1.1.5.1)."""
    predictor: int = 1
    """JPEG lossless selection value (Process 14: 1 here, SV1 says so by name)."""
    rpcl: bool = False
    """HTJ2K RPCL: RPCL progression, TLM markers, smallest resolution ≤ 64 (PS3.5 8.2.14)."""

    @property
    def encapsulated(self) -> bool:
        """Pixel data in fragments (PS3.5 A.4) rather than native."""
        return self.codec not in (Codec.NATIVE, Codec.DEFLATE)

    @property
    def name(self) -> str:
        """The standard's name of the syntax."""
        return uid.UID(self.uid).name


SYNTAXES: dict[str, Syntax] = {
    s.uid: s
    for s in (
        Syntax(uid.ImplicitVRLittleEndian, Codec.NATIVE, lossy=False),
        Syntax(uid.ExplicitVRLittleEndian, Codec.NATIVE, lossy=False),
        Syntax(uid.DeflatedExplicitVRLittleEndian, Codec.DEFLATE, lossy=False),
        Syntax(uid.RLELossless, Codec.RLE, lossy=False),
        Syntax(uid.JPEGBaseline8Bit, Codec.JPEG_LOSSY, lossy=True, method="ISO_10918_1"),
        Syntax(uid.JPEGExtended12Bit, Codec.JPEG_LOSSY, lossy=True, method="ISO_10918_1"),
        Syntax(uid.JPEGLossless, Codec.JPEG_LOSSLESS, lossy=False),
        Syntax(uid.JPEGLosslessSV1, Codec.JPEG_LOSSLESS, lossy=False),
        Syntax(uid.JPEGLSLossless, Codec.JPEGLS, lossy=False),
        Syntax(uid.JPEGLSNearLossless, Codec.JPEGLS, lossy=True, method="ISO_14495_1"),
        Syntax(uid.JPEG2000Lossless, Codec.J2K, lossy=False),
        Syntax(uid.JPEG2000, Codec.J2K, lossy=True, method="ISO_15444_1"),
        Syntax(uid.HTJ2KLossless, Codec.HTJ2K, lossy=False),
        Syntax(uid.HTJ2KLosslessRPCL, Codec.HTJ2K, lossy=False, rpcl=True),
        Syntax(uid.HTJ2K, Codec.HTJ2K, lossy=True, method="ISO_15444_15"),
    )
}
"""Every syntax the transcoder can write (and read)."""

READ_ONLY = {uid.ExplicitVRBigEndian}
"""Read, never written: Explicit VR Big Endian was retired (PS3.5 A.3)."""

UNCOMPRESSED = {uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian}


def target(transfer_syntax_uid: str) -> Syntax:
    """The syntax to write.

    Raises:
        KeyError: the transcoder cannot write it.
    """
    return SYNTAXES[transfer_syntax_uid]


def is_lossy_syntax(transfer_syntax_uid: str) -> bool:
    """True for syntaxes whose encoding is lossy (an instance stored in one is lossy)."""
    known = SYNTAXES.get(transfer_syntax_uid)
    if known is not None:
        return known.lossy
    # JPEG 2000 Part 2 multi-component (lossy) and the MPEG/HEVC video family (.100-.108).
    return transfer_syntax_uid == uid.JPEG2000MC or transfer_syntax_uid.startswith(
        "1.2.840.10008.1.2.4.10"
    )


def can_read(transfer_syntax_uid: str) -> bool:
    """True when the transcoder can decode instances stored in this syntax."""
    return transfer_syntax_uid in SYNTAXES or transfer_syntax_uid in READ_ONLY
