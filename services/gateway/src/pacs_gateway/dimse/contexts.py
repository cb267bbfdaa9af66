"""Presentation contexts the gateway accepts as association acceptor (PS3.8 7.1.1.13).

Storage SOP classes accept the uncompressed syntaxes and the common compressed ones, and keep
the data in whatever syntax the sender chose: the gateway never recompresses on the way in.
Query/retrieve identifiers are small, so those contexts only take the uncompressed syntaxes.
"""

from __future__ import annotations

from pydicom import uid
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext, build_context

from pacs_gateway.dimse.codes import (
    QUERY_RETRIEVE_MODELS,
    STORAGE_COMMITMENT_PUSH,
    VERIFICATION,
)
from pacs_gateway.dimse.mpps import MODALITY_PERFORMED_PROCEDURE_STEP
from pacs_gateway.dimse.worklist import MODALITY_WORKLIST_FIND

LOSSLESS_COMPRESSED: list[str | uid.UID] = [
    uid.JPEGLSLossless,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.JPEG2000Lossless,
    uid.JPEG2000MCLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLossless,
    uid.RLELossless,
]
"""PS3.5 A.4 encapsulated syntaxes that keep every pixel value."""

UNCOMPRESSED: list[str | uid.UID] = [
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
]
"""PS3.5 A.1-A.3 and A.5 (Explicit VR Big Endian is retired but still sent by old modalities)."""

LOSSY: list[str | uid.UID] = [
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLSNearLossless,
    uid.JPEG2000,
    uid.JPEG2000MC,
    uid.HTJ2K,
]
"""PS3.5 A.4 lossy (or possibly lossy) syntaxes: taken only when nothing better is offered."""

VIDEO: list[str | uid.UID] = [
    uid.MPEG2MPML,
    uid.MPEG2MPHL,
    uid.MPEG4HP41,
    uid.MPEG4HP41BD,
    uid.HEVCMP51,
    uid.HEVCM10P51,
]
"""PS3.5 A.4.5-A.4.13: video endoscopy/microscopy/photography arrive as MPEG or HEVC."""

STORAGE_TRANSFER_SYNTAXES: list[str | uid.UID] = [
    *LOSSLESS_COMPRESSED,
    *UNCOMPRESSED,
    *LOSSY,
    *VIDEO,
]
"""Acceptor preference order: pynetdicom takes the first of these the sender proposed for a
context, so a sender offering several gets lossless compression (smaller, bit-exact), then
uncompressed, and lossy only when it offers nothing else: the gateway never asks a modality to
degrade an image."""


def storage_sop_classes() -> list[str]:
    """Every storage SOP class pynetdicom knows (the SOP classes of PS3.4 B.5)."""
    return [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]


class SharedContexts(list[PresentationContext]):
    """The acceptor's contexts, shared by every association instead of deep-copied.

    pynetdicom deep-copies the server's contexts for each new association; with ~180 contexts
    of ~24 transfer syntaxes that costs over 100 ms of CPU (under the GIL) per association. The
    acceptor only reads them (negotiation builds new result contexts), so sharing is safe.
    """

    def __deepcopy__(self, memo: dict[int, object]) -> SharedContexts:
        return self


def scp_contexts() -> list[PresentationContext]:
    """The contexts offered as acceptor.

    Storage contexts accept SCP/SCU role selection either way (PS3.7 D.3.3.4): a sender keeps
    the default roles, and a C-GET requestor that proposes the SCP role gets it, so that the
    retrieved instances come back over its own association.
    """
    contexts = [build_context(VERIFICATION, UNCOMPRESSED)]
    for sop_class in storage_sop_classes():
        context = build_context(sop_class, STORAGE_TRANSFER_SYNTAXES)
        context.scu_role = True
        context.scp_role = True
        contexts.append(context)
    for model in QUERY_RETRIEVE_MODELS:
        contexts.append(build_context(model, UNCOMPRESSED))
    contexts.append(build_context(STORAGE_COMMITMENT_PUSH, UNCOMPRESSED))
    contexts.append(build_context(MODALITY_WORKLIST_FIND, UNCOMPRESSED))  # PS3.4 K
    contexts.append(build_context(MODALITY_PERFORMED_PROCEDURE_STEP, UNCOMPRESSED))  # F.7
    return SharedContexts(contexts)
