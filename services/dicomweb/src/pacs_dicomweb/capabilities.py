"""The capabilities description of the service (PS3.18 8.9, Annex H), as JSON.

PS3.18 describes capabilities in WADL; this JSON lists the same facts (resources, methods,
media types, transfer syntaxes, query parameters) in a form that a person or a script reads
directly. The conformance statement (``docs/conformance-statement.md``) is the full account.
"""

from __future__ import annotations

from typing import Any

from pacs_dicomweb.media import DEFAULT_SYNTAX, EXPLICIT_VR_LITTLE_ENDIAN, MEDIA_OF_SYNTAX
from pacs_dicomweb.qido import DEFAULT_RETURN_KEYS, QidoLevel


def describe(base_url: str) -> dict[str, Any]:
    """What this service offers, rooted at ``base_url``."""
    qido_params = ["{attributeID}={value}", "includefield", "fuzzymatching", "limit", "offset"]
    return {
        "service": "cloudpacs DICOMweb",
        "base": base_url,
        "standard": "DICOM PS3.18",
        "authentication": "Authorization: Bearer <JWT> (tenant and roles from the token)",
        "resources": {
            "STOW-RS": {
                "POST": ["/studies", "/studies/{study}"],
                "request media types": [
                    'multipart/related; type="application/dicom"',
                    'multipart/related; type="application/dicom+json" (with bulk data parts)',
                ],
                "response media types": ["application/dicom+json"],
            },
            "QIDO-RS": {
                "GET": [
                    "/studies",
                    "/series",
                    "/instances",
                    "/studies/{study}/series",
                    "/studies/{study}/instances",
                    "/studies/{study}/series/{series}/instances",
                ],
                "query parameters": qido_params,
                "default return attributes": {
                    level.value: list(keys) for level, keys in DEFAULT_RETURN_KEYS.items()
                },
                "levels": [level.value for level in QidoLevel],
                "response media types": ["application/dicom+json"],
            },
            "WADO-RS": {
                "GET": [
                    "/studies/{study}",
                    "/studies/{study}/series/{series}",
                    "/studies/{study}/series/{series}/instances/{instance}",
                    "…/metadata (study, series, instance)",
                    "…/instances/{instance}/frames/{frames}",
                    "…/instances/{instance}/bulkdata/{tag}",
                    "…/rendered, …/thumbnail (study, series, instance, frames)",
                ],
                "instance media types": ['multipart/related; type="application/dicom"'],
                "frame and bulk data media types": sorted(set(MEDIA_OF_SYNTAX.values())),
                "transfer syntaxes": {
                    "served as stored": "any (transfer-syntax=* or the stored syntax named)",
                    "produced by decoding": [EXPLICIT_VR_LITTLE_ENDIAN],
                    "defaults": DEFAULT_SYNTAX,
                },
                "rendered media types": ["image/jpeg", "image/png"],
                "rendered parameters": ["window=center,width[,function]", "viewport", "quality"],
                "range requests": "bytes=first-last on bulk data",
            },
        },
    }
