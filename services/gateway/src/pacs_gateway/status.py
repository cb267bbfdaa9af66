"""DIMSE status codes the gateway answers with, and where the standard defines them.

A handler returns a status :class:`~pydicom.dataset.Dataset` (Status plus an Error Comment,
PS3.7 C.4) so that the sender's log says why, without any patient data in the comment.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

SUCCESS = 0x0000
PENDING = 0xFF00
"""C-FIND/C-MOVE/C-GET: a match (or sub-operation) follows (PS3.4 C.4.1.1.4)."""
CANCEL = 0xFE00
"""Matching or sub-operations terminated due to Cancel request (PS3.4 C.4.1.1.4)."""

OUT_OF_RESOURCES = 0xA700
"""C-STORE "Refused: Out of Resources" (PS3.4 B.2.3, Table B.2-1): storage, Kafka or the index
is unavailable, so the sender keeps the image and retries later. Also C-FIND's A700 (PS3.4
C.4.1.1.4, Table C.4-1)."""

DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
"""C-STORE "Error: Data Set does not match SOP Class" (PS3.4 B.2.3): the dataset's SOP Class UID
is not the one in the command (Affected SOP Class UID). C-FIND A900 "Identifier does not match
SOP Class" (PS3.4 C.4.1.1.4) for an identifier that cannot be a query at all."""

CANNOT_UNDERSTAND = 0xC000
"""C-STORE "Error: Cannot understand" Cxxx (PS3.4 B.2.3) and C-FIND "Unable to process" Cxxx
(PS3.4 C.4.1.1.4). The low bits tell our own reasons apart:"""
UNREADABLE_DATASET = 0xC001
"""The dataset cannot be parsed."""
INVALID_IDENTIFIERS = 0xC002
"""Study, Series or SOP Instance UID (or SOP Class UID) missing or not a valid UID (PS3.5 9.1):
the instance cannot be addressed, so it is refused rather than stored under a made-up key."""
INSTANCE_MISMATCH = 0xC003
"""The dataset's SOP Instance UID differs from the command's Affected SOP Instance UID."""
UNEXPECTED_FAILURE = 0xC0FF
"""Any other failure (the storage service refused the object, an internal error)."""
INVALID_QUERY = 0xC010
"""C-FIND identifier that the index cannot evaluate (bad level, bad matching value)."""
NOT_AUTHORIZED = 0x0124
"""Refused: Not Authorized (PS3.7 C.5.16), for requests outside the caller's tenant."""


def status(code: int, comment: str | None = None) -> Dataset:
    """A status dataset with an optional Error Comment (PS3.7 C.4, at most 64 characters)."""
    result = Dataset()
    result.Status = code
    if comment:
        result.ErrorComment = comment[:64]
    return result
