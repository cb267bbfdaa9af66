"""Text detection in pixels, offline: RapidOCR (PP-OCRv4 models shipped inside the
``rapidocr-onnxruntime`` wheel, run by onnxruntime on the CPU).

Only the boxes and confidences leave this module; the recognised text is PHI and is dropped.
The engine loads its models once (about 2 s) and is shared; calls run in a worker thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class TextBox:
    """An axis-aligned box around detected text."""

    x: int
    y: int
    width: int
    height: int
    confidence: float


class TextDetector:
    """Finds text in 8-bit images."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        self.min_confidence = min_confidence
        self._engine: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._engine is None:
                # Imported on first use: loading onnxruntime and the models takes seconds.
                from rapidocr_onnxruntime import (  # type: ignore[import-untyped]  # noqa: PLC0415
                    RapidOCR,
                )

                self._engine = RapidOCR()
        return self._engine

    def detect(self, image: npt.NDArray[np.uint8]) -> list[TextBox]:
        """Boxes of text in a 2-D (grey) or 3-D (RGB) 8-bit image."""
        engine = self._load()
        rgb = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image
        result, _elapsed = engine(np.ascontiguousarray(rgb))
        boxes: list[TextBox] = []
        for points, _text, score in result or []:
            if float(score) < self.min_confidence:
                continue
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            x0, y0 = int(np.floor(min(xs))), int(np.floor(min(ys)))
            x1, y1 = int(np.ceil(max(xs))), int(np.ceil(max(ys)))
            boxes.append(TextBox(x0, y0, x1 - x0, y1 - y0, float(score)))
        return boxes


def to_display(frame: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """An 8-bit view of one frame for detection: min-max scaled, so burned-in text (usually
    drawn at the extreme of the range) stands out whatever the stored bit depth."""
    data = frame.astype(np.float32)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(frame.shape, dtype=np.uint8)
    scaled = (data - low) * (255.0 / (high - low))
    return scaled.astype(np.uint8)
