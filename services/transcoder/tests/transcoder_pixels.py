"""Reading pixels back for comparisons (reference: pydicom's decoding of the native source)."""

from __future__ import annotations

import io

import numpy as np
from pydicom import dcmread
from pydicom.pixels.utils import pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit

JPEG_LOSSY = (JPEGBaseline8Bit, JPEGExtended12Bit)


def pixels_of(part10: bytes) -> np.ndarray:
    """All frames as pydicom decodes them; YBR_FULL_422 native as its upsampled YBR samples."""
    header = dcmread(io.BytesIO(part10), stop_before_pixels=True)
    syntax = header.file_meta.TransferSyntaxUID
    photometric = str(header.get("PhotometricInterpretation", ""))
    # Native or losslessly coded YBR: the samples themselves; lossy JPEG YBR: pydicom's RGB.
    raw = photometric in ("YBR_FULL_422", "YBR_FULL") and syntax not in JPEG_LOSSY
    if header.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian:
        return pixel_array(dcmread(io.BytesIO(part10)), raw=raw)
    return pixel_array(io.BytesIO(part10), raw=raw)


def dataset_of(part10: bytes):  # type: ignore[no-untyped-def]
    """The whole dataset."""
    return dcmread(io.BytesIO(part10))
