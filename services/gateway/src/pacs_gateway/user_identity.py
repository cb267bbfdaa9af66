"""DICOM User Identity negotiation carrying a JWT (PS3.7 D.3.3.7), mapped like a bearer token.

A requestor may add a User Identity sub-item to its A-ASSOCIATE-RQ. Type 5 (PS3.7 Table
D.3-14) carries a JSON Web Token, which the gateway verifies exactly as the gRPC APIs verify a
bearer token (:mod:`pacs_common.auth`: signature against the issuer's JWKS, ``iss``, ``aud``,
``exp``, ``nbf``; tenant and roles from its claims). The token then narrows what the site
registry already admitted:

* its tenant must be the tenant of the caller's site, or the association is rejected (a token
  never moves a caller into another tenant);
* its roles decide which DIMSE services the association may use (C-STORE and Storage
  Commitment ``ingest``, C-FIND ``query``, C-MOVE/C-GET ``retrieve``; see
  :class:`pacs_gateway.dimse.handler_base.DimseHandler`).

A forged, expired or otherwise invalid token rejects the association (pynetdicom answers
A-ASSOCIATE-RJ, rejected-permanent, when the handler says the identity is not verified). Other
identity types (username, Kerberos, SAML) are accepted without verification and give no
roles, as PS3.7 D.3.3.7 allows an acceptor that does not support them, unless
``require_user_identity`` is on: then only a valid JWT admits an association.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pacs_common import audit_events
from pacs_common.auth import AuthSettings, caller_from_claims
from pacs_common.errors import PacsError

from pacs_gateway.admission import Callers

log = logging.getLogger(__name__)

JWT = 5
"""User-Identity-Type of a JSON Web Token (PS3.7 Table D.3-14)."""


class UserIdentityCheck:
    """The EVT_USER_ID handler and the "required" rule of one gateway."""

    def __init__(self, auth: AuthSettings, callers: Callers, *, required: bool) -> None:
        self._auth = auth
        self._verifier = auth.verifier()
        self._callers = callers
        self.required = required

    def missing(self, assoc: Any) -> bool:
        """True when identities are required and the request carries none (checked at
        A-ASSOCIATE-RQ time, since pynetdicom asks the handler only when an item is present)."""
        return self.required and assoc.requestor.user_identity is None

    def handle(self, event: Any) -> tuple[bool, bytes | None]:
        """EVT_USER_ID: (verified, server response). Never raises (pynetdicom would reject
        the association with a logged traceback)."""
        if event.user_id_type != JWT:
            if self.required:
                log.info("association refused: a JWT user identity is required")
            return (not self.required), None
        caller = self._callers.get(event.assoc)
        if caller is None:  # not admitted by the registry: EVT_REQUESTED rejected it already
            return False, None
        try:
            claims = self._verifier.verify_blocking(bytes(event.primary_field).decode("utf-8"))
            identity = caller_from_claims(claims, self._auth)
        except (PacsError, UnicodeDecodeError) as exc:
            log.info("association refused: user identity not verified", extra={"error": str(exc)})
            audit_events.emit(
                audit_events.dicom_login(event.assoc, caller, False, "user identity not verified")
            )
            return False, None
        if identity.tenant != caller.tenant:
            log.info("association refused: the user identity belongs to another tenant")
            audit_events.emit(
                audit_events.dicom_login(
                    event.assoc, caller, False, "user identity of another tenant"
                )
            )
            return False, None
        self._callers.set(
            event.assoc,
            dataclasses.replace(caller, user=identity.subject, roles=identity.roles),
        )
        audit_events.emit(
            audit_events.dicom_login(event.assoc, self._callers.get(event.assoc), True)
        )
        return True, None
