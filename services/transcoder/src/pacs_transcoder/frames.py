"""Reading an instance frame by frame: its header, the pixel description, decoded frames.

pydicom's :func:`pydicom.pixels.iter_pixels` reads a file-like object one frame at a time
(native frames by offset, encapsulated ones through the Basic or Extended Offset Table or by
walking the fragments), so a multi-frame object of any size needs memory for one frame only.
Deflated input (PS3.5 A.5) is the exception: the whole dataset must be inflated first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO, BinaryIO, cast

import numpy as np
from pydicom import dcmread, uid
from pydicom.dataset import Dataset
from pydicom.pixels.utils import iter_pixels

from pacs_transcoder.errors import UnsupportedImageError

JPEG_LOSSY = {uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit}
J2K_MCT = {"YBR_ICT", "YBR_RCT"}


@dataclass(frozen=True)
class PixelDescription:
    """The Image Pixel module (PS3.3 C.7.6.3) of decoded frames."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    number_of_frames: int

    @property
    def signed(self) -> bool:
        """Pixel Representation 1: two's complement samples."""
        return self.pixel_representation == 1

    @property
    def frame_bytes(self) -> int:
        """Bytes of one native frame (bits allocated 8/16/32)."""
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8

    def with_photometric(self, value: str) -> PixelDescription:
        """The same frames under another Photometric Interpretation."""
        return replace(self, photometric_interpretation=value)


def read_header(source: IO[bytes]) -> Dataset:
    """The dataset up to (not including) Pixel Data, with its file meta.

    Raises:
        UnsupportedImageError: not DICOM Part 10, or no pixel data.
    """
    source.seek(0)
    try:
        header = dcmread(source, stop_before_pixels=True)
    except Exception as exc:
        raise UnsupportedImageError(f"not a readable DICOM Part 10 object: {exc}") from exc
    if "TransferSyntaxUID" not in header.file_meta:
        raise UnsupportedImageError("the file meta information has no Transfer Syntax UID")
    return header


def describe(header: Dataset) -> PixelDescription:
    """The pixel description of the stored frames.

    Raises:
        UnsupportedImageError: a required Image Pixel attribute is missing, or the pixel data is
            of a kind the transcoder does not handle (bits allocated 1, float pixel data).
    """
    try:
        description = PixelDescription(
            rows=int(header.Rows),
            columns=int(header.Columns),
            samples_per_pixel=int(header.SamplesPerPixel),
            bits_allocated=int(header.BitsAllocated),
            bits_stored=int(header.BitsStored),
            pixel_representation=int(header.PixelRepresentation),
            photometric_interpretation=str(header.PhotometricInterpretation),
            number_of_frames=int(header.get("NumberOfFrames") or 1),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise UnsupportedImageError(f"incomplete Image Pixel module: {exc}") from exc
    if description.bits_allocated not in (8, 16, 32):
        raise UnsupportedImageError(
            f"bits allocated {description.bits_allocated} is not transcoded (only 8, 16, 32)"
        )
    if description.samples_per_pixel not in (1, 3):
        raise UnsupportedImageError("samples per pixel must be 1 or 3")
    if not 1 <= description.bits_stored <= description.bits_allocated:
        raise UnsupportedImageError("bits stored must be between 1 and bits allocated")
    return description


def decoded_photometric(stored_syntax: str, stored: PixelDescription) -> tuple[str, bool]:
    """The Photometric Interpretation of decoded frames, and whether to ask for raw samples.

    - YBR_ICT/YBR_RCT (JPEG 2000, HTJ2K): the decoder inverts the component transform, so the
      frames are RGB (PS3.5 8.2.4).
    - YBR_FULL_422 in a lossy JPEG: converted to RGB, as DCMTK's ``dcmdjpeg`` does by default.
    - YBR_FULL_422 native: the samples are kept and upsampled, i.e. YBR_FULL (PS3.3 C.7.6.3.1.2).
    - anything else: unchanged, raw samples.
    """
    photometric = stored.photometric_interpretation
    if photometric in J2K_MCT:
        return "RGB", False
    if stored_syntax in JPEG_LOSSY and photometric.startswith("YBR_FULL"):
        return "RGB", False
    if photometric in ("YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420"):
        return "YBR_FULL", True
    return photometric, True


def iter_frames(source: IO[bytes], raw: bool) -> Iterator[np.ndarray]:
    """Decoded frames, one at a time, each (rows, columns[, samples]) with interleaved samples.

    Raises:
        UnsupportedImageError: a frame cannot be decoded.
    """
    source.seek(0)
    frames = iter_pixels(cast(BinaryIO, source), raw=raw)
    index = 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except Exception as exc:
            raise UnsupportedImageError(f"frame {index} cannot be decoded: {exc}") from exc
        index += 1
        if not frame.dtype.isnative:  # big endian sources: the encoders want native order
            frame = frame.astype(frame.dtype.newbyteorder("="))
        yield frame
