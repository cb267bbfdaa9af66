"""The transcoder's errors: domain errors of :mod:`pacs_common.errors` with their gRPC codes."""

from __future__ import annotations

from pacs_common.errors import FailedPreconditionError, InvalidArgumentError


class UnsupportedImageError(InvalidArgumentError):
    """The object is not DICOM with pixel data the transcoder handles (INVALID_ARGUMENT)."""


class NotEncodableError(FailedPreconditionError):
    """The pixels cannot be written in the requested syntax (for example 16-bit data in JPEG
    Baseline, or signed data in lossy JPEG): FAILED_PRECONDITION, nothing written."""


class LossyRefusedError(FailedPreconditionError):
    """The request would lose information and lossy output was not allowed."""
