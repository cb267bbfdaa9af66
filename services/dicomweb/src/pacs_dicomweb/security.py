"""Who calls an HTTP resource: a bearer JWT as on the gRPC APIs, or a loopback caller.

The token is verified by the same :class:`~pacs_common.jwt_verifier.TokenVerifier` and mapped
to a tenant and roles by the same :func:`~pacs_common.auth.caller_from_claims` as every gRPC
API, so **the tenant comes from the token**, never from the request. The service then calls the
indexer and storage as the trusted service ``dicomweb`` (its mTLS identity) naming that tenant,
the way the DIMSE gateway does for the DICOM callers it admitted.

In the embedded default (``PACS_DICOMWEB_LOOPBACK_DEFAULT_TENANT``, off in the chart), a caller
on the loopback interface without a token acts in the default tenant with every role, as the
DIMSE gateway admits loopback associations. Tokens and claims are never logged.
"""

from __future__ import annotations

import ipaddress
import logging

from pacs_common.auth import AuthSettings, Caller, Role, caller_from_claims
from pacs_common.errors import PacsError, UnauthenticatedError
from pacs_common.jwt_verifier import TokenVerifier
from starlette.requests import Request

log = logging.getLogger(__name__)

ALL_ROLES = frozenset(role.value for role in Role)


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Resolve the :class:`Caller` of a request (see the module docstring)."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        loopback_default_tenant: bool,
        default_tenant: str,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.settings = settings
        self.verifier = verifier or settings.verifier()
        self.loopback_default_tenant = loopback_default_tenant
        self.default_tenant = default_tenant

    async def caller(self, request: Request) -> Caller:
        """The caller of ``request``.

        Raises:
            UnauthenticatedError: no valid token, and not an admitted loopback caller.
            PermissionDeniedError: a valid token that names no single tenant.
        """
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise UnauthenticatedError("the Authorization header is not a bearer token")
            try:
                claims = await self.verifier.verify(token.strip())
            except PacsError as exc:
                log.info("request refused", extra={"reason": exc.message})
                raise
            return caller_from_claims(claims, self.settings)
        client = request.client.host if request.client else None
        if self.loopback_default_tenant and _loopback(client):
            return Caller("loopback", tenant=self.default_tenant, roles=ALL_ROLES)
        raise UnauthenticatedError("a bearer token is required")
