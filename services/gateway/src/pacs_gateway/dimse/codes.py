"""The SOP class UIDs the gateway serves and the DIMSE status codes it answers with.

One module, so that no handler writes a UID or a status as a literal. Where pydicom or
pynetdicom name a value it is taken from them; the codes pynetdicom does not name are defined
here with the section of the standard that defines them.

A handler answers with a status :class:`~pydicom.dataset.Dataset` (Status plus an Error
Comment, PS3.7 C.4) so that the sender's log says why, without any patient data in the comment.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import sop_class
from pynetdicom.status import Status

# --- SOP classes (PS3.4) ---------------------------------------------------------------------


def _sop_class(keyword: str) -> UID:
    """pynetdicom's UID of a SOP class, by its keyword (pynetdicom builds these attributes at
    import, so a type checker cannot see them; a misspelt keyword fails at import)."""
    return UID(getattr(sop_class, keyword))


VERIFICATION = _sop_class("Verification")
"""Verification SOP Class (PS3.4 A.4)."""
PATIENT_ROOT_FIND = _sop_class("PatientRootQueryRetrieveInformationModelFind")
STUDY_ROOT_FIND = _sop_class("StudyRootQueryRetrieveInformationModelFind")
PATIENT_ROOT_MOVE = _sop_class("PatientRootQueryRetrieveInformationModelMove")
STUDY_ROOT_MOVE = _sop_class("StudyRootQueryRetrieveInformationModelMove")
PATIENT_ROOT_GET = _sop_class("PatientRootQueryRetrieveInformationModelGet")
STUDY_ROOT_GET = _sop_class("StudyRootQueryRetrieveInformationModelGet")
"""Patient Root and Study Root Q/R information models (PS3.4 C.6.1, C.6.2)."""
PATIENT_ROOT_MODELS = frozenset({PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET})
QUERY_RETRIEVE_MODELS = (
    PATIENT_ROOT_FIND,
    STUDY_ROOT_FIND,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_MOVE,
    PATIENT_ROOT_GET,
    STUDY_ROOT_GET,
)
STORAGE_COMMITMENT_PUSH = _sop_class("StorageCommitmentPushModel")
"""Storage Commitment Push Model SOP Class (PS3.4 J.3)."""
STORAGE_COMMITMENT_INSTANCE = _sop_class("StorageCommitmentPushModelInstance")
"""The well-known Storage Commitment Push Model SOP Instance (PS3.4 J.3.5)."""
SECONDARY_CAPTURE = _sop_class("SecondaryCaptureImageStorage")
"""Stands in for an instance whose SOP class the index does not know (PS3.4 B.5)."""

# --- statuses of every DIMSE service (PS3.7 C) -----------------------------------------------

SUCCESS = int(Status.SUCCESS)
PENDING = int(Status.PENDING)
"""C-FIND/C-MOVE/C-GET: a match (or sub-operation) follows (PS3.4 C.4.1.1.4)."""
CANCEL = int(Status.CANCEL)
"""Matching or sub-operations terminated due to Cancel request (PS3.4 C.4.1.1.4)."""

OUT_OF_RESOURCES = 0xA700
"""C-STORE "Refused: Out of Resources" (PS3.4 B.2.3, Table B.2-1): storage, Kafka or the index
is unavailable, so the sender keeps the image and retries later. Also C-FIND's A700 (PS3.4
C.4.1.1.4, Table C.4-1)."""
UNABLE_TO_CALCULATE_MATCHES = 0xA701
"""C-MOVE/C-GET "Refused: Out of Resources - Unable to calculate number of matches" (PS3.4
C.4.2.1.5, C.4.3.1.4): the index or storage is unavailable, retry later."""
MOVE_DESTINATION_UNKNOWN = int(Status.MOVE_DESTINATION_UNKNOWN)
"""C-MOVE "Refused: Move Destination unknown" (PS3.4 C.4.2.1.5); pynetdicom answers it when the
handler yields no destination."""

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

# PS3.7 C.5 general statuses (DIMSE-N services, and refusals of any service).
STORED_AS_NEW_VERSION = 0xB000
"""C-STORE warning (PS3.4 B.2.3, Warning B000): stored, as a new version of an instance whose
SOP Instance UID was stored before with other bytes (pacs_gateway.duplicates)."""
DUPLICATE_SOP_INSTANCE = 0x0111
"""Duplicate SOP Instance (PS3.7 C): the SOP Instance UID is stored already, in another study
or with other bytes under a tenant that refuses new versions (pacs_gateway.duplicates)."""
INVALID_SOP_INSTANCE = 0x0117
"""Invalid SOP Instance (PS3.7 C.5.12): N-ACTION not on the well-known instance."""
MISSING_ATTRIBUTE = 0x0120
"""Missing Attribute (PS3.7 C.5.14): a required attribute of the action information is absent."""
NO_SUCH_ACTION_TYPE = 0x0123
"""No Such Action Type (PS3.7 C.5.6)."""
NOT_AUTHORIZED = 0x0124
"""Refused: Not Authorized (PS3.7 C.5.16), for requests outside the caller's tenant."""

# --- Storage Commitment (PS3.4 J.3) ----------------------------------------------------------

REQUEST_STORAGE_COMMITMENT = 1
"""N-ACTION Action Type ID "Request Storage Commitment" (PS3.4 J.3.2)."""
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2
"""N-EVENT-REPORT Event Type IDs (PS3.4 J.3.3)."""
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
RESOURCE_LIMITATION = 0x0213
"""Failure Reason (0008,1197) values of a Failed SOP Sequence item (PS3.4 J.3.3.1)."""


def status(code: int, comment: str | None = None) -> Dataset:
    """A status dataset with an optional Error Comment (PS3.7 C.4, at most 64 characters)."""
    result = Dataset()
    result.Status = code
    if comment:
        result.ErrorComment = comment[:64]
    return result
