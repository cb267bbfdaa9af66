"""Encoding one decoded frame into one syntax, as the standard constrains it (PS3.5 8.2).

Each encoder takes a frame (rows, columns[, samples], interleaved) and the pixel description,
and returns the codestream of that frame plus the Photometric Interpretation it now has. The
library of each codec is named in :mod:`pacs_transcoder.syntaxes`.

Signed pixels (Pixel Representation 1): JPEG lossless carries the two's complement bit pattern
of Bits Stored bits as unsigned samples (PS3.5 8.2.1, decoders hand the same bits back); JPEG
2000, HTJ2K, JPEG-LS (through pydicom) and RLE carry them as they are. Lossy JPEG of signed data
is refused rather than wrapping around at zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import imagecodecs
import numpy as np
from pydicom import uid
from pydicom.pixels.encoders.base import get_encoder

from pacs_transcoder.errors import NotEncodableError
from pacs_transcoder.frames import PixelDescription
from pacs_transcoder.syntaxes import Codec, Syntax


@dataclass(frozen=True)
class LossyOptions:
    """Quality of the lossy encoders (used only when a lossy syntax is asked for)."""

    jpeg_quality: int = 90
    """libjpeg quality 1-100 for JPEG Baseline/Extended."""
    jpegls_near: int = 2
    """JPEG-LS NEAR: the largest error per sample (PS3.5 8.2.3)."""
    j2k_psnr: int = 50
    """Target peak signal-to-noise ratio (dB) of lossy JPEG 2000 (OpenJPEG's quality layer)."""
    htj2k_quantization: float = 0.002
    """OpenJPH base quantization step of lossy HTJ2K (smaller: better quality, bigger)."""


def _decompositions(rows: int, columns: int, at_least: int = 0) -> int:
    """Wavelet decomposition levels: OpenJPEG's and OpenJPH's default of 5, fewer for small
    images (every level halves the smallest side, which must stay at least 1)."""
    fitting = max(1, int(math.log2(max(1, min(rows, columns)))))
    return max(1, min(max(5, at_least), fitting))


def _rpcl_decompositions(rows: int, columns: int) -> int:
    """HTJ2K RPCL needs the lowest resolution to be at most 64 samples on its longer side
    (PS3.5 8.2.14), and at least the default 5 levels where the image is large enough."""
    needed = max(0, math.ceil(math.log2(max(rows, columns) / 64))) if max(rows, columns) > 64 else 0
    return _decompositions(rows, columns, at_least=needed)


def _unsigned_bits(frame: np.ndarray, description: PixelDescription) -> np.ndarray:
    """Samples as unsigned integers of Bits Stored bits (two's complement pattern if signed)."""
    if description.bits_allocated == 8:
        unsigned = frame.astype(np.uint8, copy=False) if frame.dtype != np.uint8 else frame
        if frame.dtype == np.int8:
            unsigned = frame.view(np.uint8)
    else:
        unsigned = frame.view(np.uint16) if frame.dtype == np.int16 else frame.astype(np.uint16)
    if description.bits_stored < unsigned.dtype.itemsize * 8:
        unsigned = unsigned & np.array((1 << description.bits_stored) - 1, dtype=unsigned.dtype)
    return np.ascontiguousarray(unsigned)


def _pydicom_encode(
    transfer_syntax: str, frame: np.ndarray, description: PixelDescription, **options: int
) -> bytes:
    encoder = get_encoder(transfer_syntax)
    encoded: bytes = encoder.encode(
        np.ascontiguousarray(frame),
        rows=description.rows,
        columns=description.columns,
        samples_per_pixel=description.samples_per_pixel,
        number_of_frames=1,
        bits_allocated=description.bits_allocated,
        bits_stored=description.bits_stored,
        pixel_representation=description.pixel_representation,
        photometric_interpretation=description.photometric_interpretation,
        planar_configuration=0,
        **options,  # type: ignore[arg-type]  # pydicom types **kwargs as its union of options
    )
    return encoded


def _jpeg_lossy(frame: np.ndarray, d: PixelDescription, options: LossyOptions) -> tuple[bytes, str]:
    if d.signed:
        raise NotEncodableError("lossy JPEG of signed pixel data is not supported")
    if d.bits_stored > 12 or d.photometric_interpretation == "PALETTE COLOR":
        raise NotEncodableError("lossy JPEG needs ≤ 12-bit grayscale or colour (not palette)")
    if d.samples_per_pixel == 3:
        # PS3.5 8.2.1: colour in JPEG Baseline is YBR_FULL_422 (YCbCr, chroma halved across).
        if d.bits_stored > 8:
            raise NotEncodableError("lossy JPEG colour must be 8-bit")
        colorspace = "YCbCr" if d.photometric_interpretation == "YBR_FULL" else "RGB"
        encoded = imagecodecs.jpeg8_encode(
            frame, level=options.jpeg_quality, colorspace=colorspace,
            outcolorspace="YCbCr", subsampling="422",
        )  # fmt: skip
        return bytes(encoded), "YBR_FULL_422"
    precision = 8 if d.bits_stored <= 8 and d.bits_allocated == 8 else 12
    encoded = imagecodecs.jpeg8_encode(
        _unsigned_bits(frame, d), level=options.jpeg_quality, bitspersample=precision
    )
    return bytes(encoded), d.photometric_interpretation


def _jpeg_lossless(frame: np.ndarray, d: PixelDescription, predictor: int) -> tuple[bytes, str]:
    if d.bits_stored > 16 or d.bits_allocated > 16:
        raise NotEncodableError("JPEG lossless carries at most 16 bits per sample")
    samples = _unsigned_bits(frame, d)
    precision = max(2, d.bits_stored)
    # Samples are coded as they are (no colour conversion in lossless JPEG), YBR ones too.
    encoded = imagecodecs.jpeg8_encode(
        samples, lossless=True, predictor=predictor, bitspersample=precision
    )
    return bytes(encoded), d.photometric_interpretation


def _jpegls(frame: np.ndarray, d: PixelDescription, syntax: Syntax, options: LossyOptions) -> bytes:
    if syntax.lossy:
        return _pydicom_encode(syntax.uid, frame, d, jls_error=options.jpegls_near)
    try:
        return _pydicom_encode(syntax.uid, frame, d)
    except RuntimeError:
        if d.signed:
            raise
        # pyjpegls sizes its output buffer from the input and fails on some tiny images
        # ("destination buffer is too small"); imagecodecs wraps the same CharLS with its own.
        return bytes(imagecodecs.jpegls_encode(np.ascontiguousarray(frame)))


def _j2k(frame: np.ndarray, d: PixelDescription, lossy: bool, options: LossyOptions) -> bytes:
    color = d.samples_per_pixel == 3 and d.photometric_interpretation == "RGB"
    encoded = imagecodecs.jpeg2k_encode(
        np.ascontiguousarray(frame),
        level=options.j2k_psnr if lossy else None,
        codecformat="J2K",
        bitspersample=d.bits_stored,
        resolutions=_decompositions(d.rows, d.columns) + 1,
        reversible=not lossy,
        mct=color,
    )
    return bytes(encoded)


def _htj2k(frame: np.ndarray, d: PixelDescription, syntax: Syntax, options: LossyOptions) -> bytes:
    color = d.samples_per_pixel == 3 and d.photometric_interpretation == "RGB"
    levels = (
        _rpcl_decompositions(d.rows, d.columns)
        if syntax.rpcl
        else _decompositions(d.rows, d.columns)
    )
    # OpenJPH codes every sample at the array's bit width: a step relative to that width would
    # be coarser for 12 bits in 16 than for 16 in 16; scale it to Bits Stored instead.
    step = options.htj2k_quantization * 2.0 ** (d.bits_stored - 8 * frame.dtype.itemsize)
    encoded = imagecodecs.htj2k_encode(
        np.ascontiguousarray(frame),
        level=step if syntax.lossy else None,
        rgb=color,
        resolutions=levels,
        reversible=not syntax.lossy,
        # PS3.5 8.2.14: RPCL needs TLM markers; OpenJPH's default progression is RPCL.
        tlm=syntax.rpcl,
    )
    return bytes(encoded)


def _mct_photometric(d: PixelDescription, lossy: bool) -> str:
    """PS3.5 8.2.4/8.2.14: RGB coded with the component transform is YBR_RCT (reversible) or
    YBR_ICT (irreversible); other interpretations are kept."""
    if d.samples_per_pixel == 3 and d.photometric_interpretation == "RGB":
        return "YBR_ICT" if lossy else "YBR_RCT"
    return d.photometric_interpretation


def encode_frame(
    frame: np.ndarray, description: PixelDescription, syntax: Syntax, options: LossyOptions
) -> tuple[bytes, str]:
    """One frame's codestream in ``syntax``, and the Photometric Interpretation it has.

    Raises:
        NotEncodableError: the pixels cannot be represented in ``syntax``.
    """
    d = description
    if syntax.lossy and d.photometric_interpretation == "PALETTE COLOR":
        raise NotEncodableError("palette colour images are never compressed lossily")
    if d.bits_allocated == 32 and syntax.codec not in (Codec.RLE, Codec.NATIVE, Codec.DEFLATE):
        raise NotEncodableError(f"{syntax.name} cannot carry 32-bit samples")
    try:
        if syntax.codec is Codec.RLE:
            return _pydicom_encode(uid.RLELossless, frame, d), d.photometric_interpretation
        if syntax.codec is Codec.JPEG_LOSSY:
            if syntax.uid == uid.JPEGBaseline8Bit and (d.bits_stored > 8 or d.bits_allocated > 8):
                raise NotEncodableError("JPEG Baseline carries 8-bit samples only")
            return _jpeg_lossy(frame, d, options)
        if syntax.codec is Codec.JPEG_LOSSLESS:
            return _jpeg_lossless(frame, d, syntax.predictor)
        if syntax.codec is Codec.JPEGLS:
            return _jpegls(frame, d, syntax, options), d.photometric_interpretation
        if syntax.codec is Codec.J2K:
            return _j2k(frame, d, syntax.lossy, options), _mct_photometric(d, syntax.lossy)
        if syntax.codec is Codec.HTJ2K:
            return _htj2k(frame, d, syntax, options), _mct_photometric(d, syntax.lossy)
    except NotEncodableError:
        raise
    except Exception as exc:
        raise NotEncodableError(f"{syntax.name} encoder failed: {exc}") from exc
    raise NotEncodableError(f"{syntax.name} is not an encapsulated syntax")


def native_frame(frame: np.ndarray, description: PixelDescription) -> bytes:
    """A frame as native little endian samples of Bits Allocated bits (PS3.5 8.1.1),
    interleaved (Planar Configuration 0)."""
    width = description.bits_allocated // 8
    kind = "i" if description.signed else "u"
    return np.ascontiguousarray(frame).astype(f"<{kind}{width}", copy=False).tobytes()
