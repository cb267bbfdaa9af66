"""Clean Pixel Data (PS3.15 E.3.1) and burned-in annotation.

* BurnedInAnnotation (0028,0301) is honoured before anything else: an image that says YES is
  refused unless Clean Pixel Data is asked (or the operator configured "keep").
* Under Clean Pixel Data, configured regions are masked for images whose manufacturer, model
  and modality match a :class:`~pacs_deid.settings.RegionMask` (the usual way, as RSNA CTP's
  and pydicom/deid's filters do), and text found by OCR (:mod:`pacs_deid.ocr`) is masked in
  every frame. Both are reported, region by region, without the text.
* Compressed pixel data is decoded with pydicom's decoders (pylibjpeg, openjpeg, RLE plugins)
  and written back uncompressed (Explicit VR Little Endian): re-compressing is the transcoder
  service's job, not this one's.
* Overlay planes (60xx,3000) under the Clean Graphics Option get the same OCR: the text boxes
  are cleared in the bitmap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pacs_common.errors import FailedPreconditionError, InvalidArgumentError
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pack_bits, unpack_bits
from pydicom.uid import ExplicitVRLittleEndian

from pacs_deid.ocr import TextBox, TextDetector, to_display
from pacs_deid.settings import RegionMask


@dataclass(frozen=True)
class Masked:
    """One masked rectangle (frame from 1)."""

    frame: int
    x: int
    y: int
    width: int
    height: int
    reason: str
    confidence: float = 0.0


def check_burned_in(ds: Dataset, clean_pixels: bool, policy: str) -> None:
    """Refuse an image that declares burned-in annotation when its pixels will not be cleaned.

    Raises:
        FailedPreconditionError: BurnedInAnnotation is YES, Clean Pixel Data was not asked and
            the policy is "reject".
    """
    declared = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    if declared == "YES" and not clean_pixels and policy == "reject":
        raise FailedPreconditionError(
            "BurnedInAnnotation is YES: ask for the clean_pixel_data option to de-identify it"
        )


class PixelCleaner:
    """Masks configured regions and detected text."""

    def __init__(
        self, masks: list[RegionMask], detector: TextDetector | None, margin: int = 2
    ) -> None:
        self.masks = masks
        self.detector = detector
        self.margin = margin

    def regions_for(self, ds: Dataset) -> list[tuple[int, int, int, int]]:
        """The configured regions that apply to this image's device."""
        found: list[tuple[int, int, int, int]] = []
        for mask in self.masks:
            if mask.modality and str(ds.get("Modality", "")).upper() != mask.modality.upper():
                continue
            if mask.manufacturer and not re.search(
                mask.manufacturer, str(ds.get("Manufacturer", "")), re.IGNORECASE
            ):
                continue
            if mask.model and not re.search(
                mask.model, str(ds.get("ManufacturerModelName", "")), re.IGNORECASE
            ):
                continue
            found.extend(mask.regions)
        return found

    def clean(self, ds: Dataset) -> tuple[list[Masked], list[str]]:
        """Mask ``ds``'s pixels in place; returns the masked regions and notes."""
        if "PixelData" not in ds:
            return [], []
        notes: list[str] = []
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            try:
                ds.decompress()
            except Exception as exc:  # any codec failure: the image cannot be cleaned
                raise InvalidArgumentError(f"pixel data cannot be decoded: {exc}") from exc
            notes.append("pixel data decompressed (written as Explicit VR Little Endian)")
        pixels = ds.pixel_array
        frames = pixels if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[np.newaxis]
        frames = np.array(frames, copy=True)
        masked: list[Masked] = []
        fill = frames.min()
        for x, y, w, h in self.regions_for(ds):
            frames[:, y : y + h, x : x + w] = fill
            masked += [Masked(i + 1, x, y, w, h, "config") for i in range(len(frames))]
        if self.detector is not None:
            for index, frame in enumerate(frames):
                for box in self.detector.detect(_display(frame, ds)):
                    region = self._grow(box, frame.shape)
                    x, y, w, h = region
                    frame[y : y + h, x : x + w] = fill
                    masked.append(Masked(index + 1, x, y, w, h, "ocr", box.confidence))
        result = frames if int(ds.get("NumberOfFrames", 1) or 1) > 1 else frames[0]
        ds.PixelData = np.ascontiguousarray(result).tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.BurnedInAnnotation = "NO"
        return masked, notes

    def _grow(self, box: TextBox, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        x0 = max(0, box.x - self.margin)
        y0 = max(0, box.y - self.margin)
        x1 = min(shape[1], box.x + box.width + self.margin)
        y1 = min(shape[0], box.y + box.height + self.margin)
        return x0, y0, x1 - x0, y1 - y0

    def clean_overlay(self, ds: Dataset, group: int) -> bool:
        """Clear text found in one overlay plane (Clean Graphics); False when it cannot be
        read (the caller then removes it)."""
        if self.detector is None:
            return False
        try:
            rows = int(ds[group << 16 | 0x0010].value)
            columns = int(ds[group << 16 | 0x0011].value)
            data = ds[group << 16 | 0x3000].value
            bits = np.asarray(unpack_bits(data))[: rows * columns].reshape(rows, columns)
        except (KeyError, ValueError, TypeError):
            return False
        plane = (bits * 255).astype(np.uint8)
        boxes = self.detector.detect(plane)
        for box in boxes:
            x, y, w, h = self._grow(box, plane.shape)
            bits[y : y + h, x : x + w] = 0
        if boxes:
            ds[group << 16 | 0x3000].value = pack_bits(bits.ravel())
        return True


def _display(frame: npt.NDArray[Any], ds: Dataset) -> npt.NDArray[np.uint8]:
    if frame.ndim == 3:  # colour: detect on the luminance
        grey = frame[..., :3].astype(np.float32).mean(axis=-1)
        return to_display(grey)
    return to_display(frame)
