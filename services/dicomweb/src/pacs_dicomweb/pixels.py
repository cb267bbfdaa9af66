"""Pixel work of WADO-RS: frames as stored, decoding to Explicit VR Little Endian, rendering.

Everything here is CPU-bound and runs in a worker thread (``asyncio.to_thread``) on one
instance's bytes at a time. Decoding uses pydicom's pixel backends with the pylibjpeg plugins
(JPEG, JPEG-LS, JPEG 2000, RLE) and pyjpegls; no encoder is needed, because the only syntax
produced here is Explicit VR Little Endian. Producing another syntax (JPEG 2000, HTJ2K, ...) is
the transcoder service's job (``pacs_common.clients.transcode.TranscodeClient``, built in
parallel): :func:`to_explicit_little_endian` is where it will plug in.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pacs_common.errors import InvalidArgumentError, NotFoundError
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian

from pacs_dicomweb.http_errors import NotAcceptableError
from pacs_dicomweb.media import EXPLICIT_VR_LITTLE_ENDIAN


class UndecodableError(InvalidArgumentError):
    """The stored pixel data cannot be decoded here (no decoder for its syntax)."""


def read_dataset(data: bytes) -> Dataset:
    """Parse a whole stored Part 10 object.

    Raises:
        UndecodableError: the bytes do not parse (storage only holds parsed objects, so this
            means a decoder or pydicom limitation).
    """
    try:
        return dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UndecodableError(f"the stored object cannot be parsed: {exc}") from exc


def number_of_frames(dataset: Dataset) -> int:
    """Frames in the pixel data (1 for a single-frame image)."""
    value = dataset.get("NumberOfFrames", 1)
    try:
        return max(int(value or 1), 1)
    except (TypeError, ValueError):
        return 1


def check_frames(dataset: Dataset, numbers: list[int]) -> None:
    """Raise NotFoundError for an image without pixel data or a frame number out of range."""
    if "PixelData" not in dataset:
        raise NotFoundError("the instance has no pixel data")
    count = number_of_frames(dataset)
    for number in numbers:
        if not 1 <= number <= count:
            raise NotFoundError(f"frame {number} does not exist (the instance has {count})")


def _native_frame_length(dataset: Dataset) -> int:
    bits = int(dataset.BitsAllocated)
    pixels = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel", 1))
    if bits == 1:
        raise UndecodableError("1-bit frames are not aligned on bytes; ask for the instance")
    return pixels * bits // 8


def stored_frame(dataset: Dataset, number: int) -> bytes:
    """Frame ``number`` (1-based) as stored: its compressed bitstream, or its native bytes."""
    syntax = UID(str(dataset.file_meta.TransferSyntaxUID))
    if syntax.is_encapsulated:
        return get_frame(dataset.PixelData, number - 1, number_of_frames=number_of_frames(dataset))
    if syntax != ExplicitVRLittleEndian and not syntax.is_little_endian:
        return decoded_frame(dataset, number)  # big endian: swap through the decoder
    length = _native_frame_length(dataset)
    start = (number - 1) * length
    return bytes(dataset.PixelData[start : start + length])


def decoded_frame(dataset: Dataset, number: int) -> bytes:
    """Frame ``number`` decoded to native little-endian bytes (Explicit VR Little Endian)."""
    try:
        array = pixel_array(dataset, index=number - 1, raw=False)
    except (RuntimeError, ValueError, NotImplementedError, AttributeError) as exc:
        raise UndecodableError(f"the pixel data cannot be decoded: {exc}") from exc
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def to_explicit_little_endian(data: bytes) -> bytes:
    """A stored Part 10 object rewritten in Explicit VR Little Endian (pixel data decoded).

    The transcoder service will take this over (and produce other syntaxes too); this local
    path only ever decodes.
    """
    dataset = read_dataset(data)
    syntax = UID(str(dataset.file_meta.TransferSyntaxUID))
    if syntax == EXPLICIT_VR_LITTLE_ENDIAN:
        return data
    if syntax.is_encapsulated and "PixelData" in dataset:
        try:
            dataset.decompress()
        except (RuntimeError, ValueError, NotImplementedError, AttributeError) as exc:
            raise UndecodableError(f"the pixel data cannot be decoded: {exc}") from exc
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return out.getvalue()


@dataclass(frozen=True)
class RenderOptions:
    """Query parameters of a rendered resource (PS3.18 8.3.5.1)."""

    media_type: str = "image/jpeg"
    window: tuple[float, float] | None = None
    """(center, width) from ``window=center,width,function``; None = the image's or min/max."""
    viewport: tuple[int, int] | None = None
    quality: int = 90


def parse_render_options(
    accept: str | None, params: dict[str, str], *, thumbnail: bool
) -> RenderOptions:
    """Read ``accept``/``window``/``viewport``/``quality`` (PS3.18 8.3.5.1).

    Raises:
        InvalidArgumentError: a malformed parameter.
    """
    media = params.get("accept") or "image/jpeg"
    for candidate in (accept or "").split(","):
        value = candidate.split(";")[0].strip().lower()
        if value in ("image/jpeg", "image/png"):
            media = value
            break
    media = media.split(";")[0].strip().lower()
    if media not in ("image/jpeg", "image/png"):
        raise NotAcceptableError("rendered media types: image/jpeg, image/png")
    window = None
    if "window" in params:
        parts = params["window"].split(",")
        try:
            window = (float(parts[0]), float(parts[1]))
        except (IndexError, ValueError):
            raise InvalidArgumentError("window is center,width[,function]") from None
        if window[1] <= 0:
            raise InvalidArgumentError("the window width must be positive")
    viewport = (128, 128) if thumbnail else None
    if "viewport" in params:
        parts = params["viewport"].split(",")
        try:
            viewport = (int(parts[0]), int(parts[1]))
        except (IndexError, ValueError):
            raise InvalidArgumentError("viewport is vw,vh") from None
        if not (0 < viewport[0] <= 4096 and 0 < viewport[1] <= 4096):
            raise InvalidArgumentError("viewport sizes are 1..4096")
    quality = 90
    if "quality" in params:
        try:
            quality = int(params["quality"])
        except ValueError:
            raise InvalidArgumentError("quality is 1..100") from None
        if not 1 <= quality <= 100:
            raise InvalidArgumentError("quality is 1..100")
    return RenderOptions(media, window, viewport, quality)


def render(dataset: Dataset, number: int, options: RenderOptions) -> bytes:
    """One frame as a consumer-format image (PS3.18 8.3.5.1.3): modality LUT, then the
    query's window or the image's VOI (or its min/max), then 8 bits, scaled into the viewport.
    """
    check_frames(dataset, [number])
    try:
        array = pixel_array(dataset, index=number - 1)
    except (RuntimeError, ValueError, NotImplementedError, AttributeError) as exc:
        raise UndecodableError(f"the pixel data cannot be decoded: {exc}") from exc
    samples = int(dataset.get("SamplesPerPixel", 1))
    if samples == 1:
        values = apply_modality_lut(array, dataset).astype(np.float64)
        if options.window is not None:
            center, width = options.window
            low, high = center - width / 2, center + width / 2
        elif (
            "WindowCenter" in dataset and "WindowWidth" in dataset
        ) or "VOILUTSequence" in dataset:
            values = apply_voi_lut(values, dataset, index=0).astype(np.float64)
            low, high = float(values.min()), float(values.max())
        else:
            low, high = float(values.min()), float(values.max())
        scaled = (np.clip(values, low, high) - low) / max(high - low, 1e-9) * 255.0
        if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            scaled = 255.0 - scaled
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    else:
        if array.dtype != np.uint8:
            top = float(array.max()) or 1.0
            array = (array.astype(np.float64) / top * 255.0).astype(np.uint8)
        image = Image.fromarray(array, mode="RGB")
    if options.viewport is not None:
        image.thumbnail(options.viewport, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if options.media_type == "image/png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=options.quality)
    return out.getvalue()
