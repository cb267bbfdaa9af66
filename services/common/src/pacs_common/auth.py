"""Who is calling a gRPC API, and may they: bearer JWTs for applications, mTLS for services.

Every API a cloud application may call requires an OAuth 2.0 bearer token (``authorization:
Bearer <JWT>`` metadata), checked by :class:`~pacs_common.jwt_verifier.TokenVerifier`. The
token names exactly one tenant and the caller's roles; **the tenant comes from the token, never
from the request**: a request naming another tenant is refused (PERMISSION_DENIED), an empty
one means the token's tenant (:meth:`Caller.tenant_for`).

Internal services (the gateway querying the indexer for an authenticated DICOM caller) are
identified instead by the common name of their mutual-TLS client certificate: a call without a
token from a peer whose CN is in ``PACS_AUTH_TRUSTED_SERVICES`` is trusted and acts on the
tenant its request names, because that service has authenticated its own caller.

How tenant and roles are read from a token (see ``infra/hydra_clients.py`` for why): by
default from the scopes (``scp`` list as hydra issues it, or the RFC 9068 ``scope`` string),
``pacs:tenant:<tenant>`` and ``pacs:role:<role>``; with ``PACS_AUTH_TENANT_CLAIM`` /
``PACS_AUTH_ROLES_CLAIM`` from dedicated claims instead (a Keycloak mapper's ``tenant``, Entra
app roles in ``roles``).

:class:`AuthorizationInterceptor` authenticates every call of the protected services and checks
the role the method needs before the servicer runs, so a refused call reads and writes nothing;
servicers get the :class:`Caller` with :func:`caller_of`. Refusals are domain errors
(:class:`~pacs_common.errors.UnauthenticatedError`, :class:`~pacs_common.errors.
PermissionDeniedError`) mapped by the one error interceptor, which must therefore run outside
this one (``build_server`` puts it first). Tokens and claims are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import grpc
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pacs_common import audit_events
from pacs_common.errors import (
    InvalidArgumentError,
    PacsError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from pacs_common.grpc_handlers import (
    MethodHandler,
    RewrappingInterceptor,
    iterate_response,
    rewrap,
)
from pacs_common.jwt_verifier import TokenVerifier, require_asymmetric

log = logging.getLogger(__name__)


class Role(StrEnum):
    """What a caller may do; a token carries any number of them."""

    INGEST = "ingest"
    QUERY = "query"
    RETRIEVE = "retrieve"
    ADMIN = "admin"
    AUDIT_READ = "audit-read"
    """Read the audit trail (who touched which patient's images)."""


def _split_names(value: object) -> object:
    if isinstance(value, str):
        return {name.strip() for name in value.split(",") if name.strip()}
    return value


class AuthSettings(BaseSettings):
    """How callers are authenticated (``PACS_AUTH_*``); defaults fit ``infra/up.sh``'s hydra."""

    model_config = SettingsConfigDict(env_prefix="PACS_AUTH_", extra="ignore")

    required: bool = Field(
        True,
        description="refuse calls that carry no token and come from no trusted service; false "
        "treats them as a trusted internal caller — only for a stack whose service channels "
        "are not yet mutual TLS, never in a deployment",
    )
    issuer: str = Field("http://127.0.0.1:14444", description="exact `iss` of accepted tokens")
    audience: str = Field("cloudpacs", description="a value `aud` must contain")
    jwks_url: str | None = Field(None, description="default: <issuer>/.well-known/jwks.json")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway_s: float = Field(30.0, ge=0, le=300, description="clock skew tolerated on exp/nbf")
    jwks_cache_s: float = Field(300.0, gt=0, description="how long fetched keys are trusted")
    min_jwks_refresh_s: float = Field(
        10.0, ge=0, description="least time between fetches forced by an unknown key id"
    )
    scope_claim: str = Field("scp", description="claim holding the scopes (list or string)")
    tenant_claim: str | None = Field(None, description="read the tenant from this claim")
    tenant_scope_prefix: str = "pacs:tenant:"
    roles_claim: str | None = Field(None, description="read the roles from this claim")
    role_scope_prefix: str = "pacs:role:"
    trusted_services: Annotated[set[str], NoDecode] = Field(
        default_factory=set,
        description="mTLS certificate CNs of internal services (comma-separated)",
    )

    _split = field_validator("trusted_services", mode="before")(_split_names)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        require_asymmetric(value)  # at start-up, naming the setting, not at the first token
        return value

    def jwks(self) -> str:
        """The JWKS URL (configured, or the issuer's well-known one)."""
        return self.jwks_url or f"{self.issuer.rstrip('/')}/.well-known/jwks.json"

    def verifier(self) -> TokenVerifier:
        """A :class:`TokenVerifier` for these settings."""
        return TokenVerifier(
            issuer=self.issuer,
            audience=self.audience,
            jwks_url=self.jwks(),
            algorithms=self.algorithms,
            leeway_s=self.leeway_s,
            jwks_cache_s=self.jwks_cache_s,
            min_refresh_s=self.min_jwks_refresh_s,
        )


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one RPC.

    ``tenant`` is the token's tenant; a trusted internal service has none of its own and acts
    on the tenant its request names.
    """

    subject: str
    tenant: str | None
    roles: frozenset[str]
    trusted_service: bool = False

    def require(self, role: Role | str) -> None:
        """Raise PermissionDeniedError unless the caller has ``role`` (services have all)."""
        if not self.trusted_service and role not in self.roles:
            raise PermissionDeniedError(f"the caller lacks the role {role!s}")

    def tenant_for(self, requested: str) -> str:
        """The tenant a request acts on: the token's; a request naming another is refused.

        Raises:
            PermissionDeniedError: ``requested`` is set and is not the caller's tenant.
            InvalidArgumentError: a trusted service named no tenant (it must).
        """
        if self.trusted_service:
            if not requested:
                raise InvalidArgumentError("tenant is required")
            return requested
        if self.tenant is None:  # pragma: no cover - tokens always map to a tenant
            raise PermissionDeniedError("the caller has no tenant")
        if requested and requested != self.tenant:
            raise PermissionDeniedError("the request names a tenant the caller does not belong to")
        return self.tenant


def caller_from_claims(claims: Mapping[str, Any], settings: AuthSettings) -> Caller:
    """Map verified claims to a Caller (tenant and roles, see the module docstring).

    Raises:
        PermissionDeniedError: the token names no tenant, or more than one.
    """
    raw = claims.get(settings.scope_claim, claims.get("scope", []))
    scopes = raw.split() if isinstance(raw, str) else [str(s) for s in raw or []]

    def scoped(prefix: str) -> set[str]:
        return {s[len(prefix) :] for s in scopes if s.startswith(prefix) and len(s) > len(prefix)}

    if settings.tenant_claim:
        value = claims.get(settings.tenant_claim)
        tenants = {value} if isinstance(value, str) and value else set()
    else:
        tenants = scoped(settings.tenant_scope_prefix)
    if settings.roles_claim:
        value = claims.get(settings.roles_claim, [])
        roles = {value} if isinstance(value, str) else {str(r) for r in value or []}
    else:
        roles = scoped(settings.role_scope_prefix)
    if len(tenants) != 1:
        raise PermissionDeniedError("the token must name exactly one tenant")
    return Caller(subject=str(claims.get("sub", "")), tenant=tenants.pop(), roles=frozenset(roles))


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of the ``authorization: Bearer …`` metadata, None when there is none.

    Raises:
        UnauthenticatedError: an authorization header that is not a bearer token.
    """
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode() if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("the authorization metadata is not a bearer token")
        return token.strip()
    return None


async def resolve_caller(
    token: str | None,
    peer_common_name: str | None,
    verifier: TokenVerifier,
    settings: AuthSettings,
) -> Caller:
    """Decide who calls: a verified token wins; else a trusted service's mTLS identity.

    Args:
        token: the bearer token, if the call carried one.
        peer_common_name: the CN of the peer's verified client certificate, if any.

    Raises:
        UnauthenticatedError: no valid token and no trusted peer.
        PermissionDeniedError: a valid token that names no single tenant.
    """
    if token is not None:
        return caller_from_claims(await verifier.verify(token), settings)
    if peer_common_name and peer_common_name in settings.trusted_services:
        return Caller(peer_common_name, tenant=None, roles=frozenset(), trusted_service=True)
    if not settings.required:
        return Caller("internal", tenant=None, roles=frozenset(), trusted_service=True)
    raise UnauthenticatedError("a bearer token is required")


def peer_common_name(context: Any) -> str | None:
    """The CN of the peer's verified TLS client certificate (None without mutual TLS)."""
    try:
        names = context.auth_context().get("x509_common_name") or []
    except (AttributeError, RuntimeError):
        return None
    if not names:
        return None
    first = names[0]
    return first.decode() if isinstance(first, bytes) else str(first)


# The Caller of each running call, keyed by the call's servicer context (alive for the call).
_CALLERS: dict[int, Caller] = {}


def caller_of(context: Any) -> Caller:
    """The Caller that :class:`AuthorizationInterceptor` authenticated for this call.

    Raises:
        UnauthenticatedError: the call did not pass through the interceptor (a wiring bug:
            refusing is the safe answer).
    """
    caller = _CALLERS.get(id(context))
    if caller is None:
        raise UnauthenticatedError("the call was not authenticated")
    return caller


class AuthorizationInterceptor(RewrappingInterceptor):
    """Authenticate calls of the protected services and check each method's role.

    Args:
        settings: how to authenticate.
        roles: full service name -> {method name -> required role}. Methods of these services
            missing from their map need :attr:`Role.ADMIN` (fail closed); other services
            (health, reflection) pass untouched.
        verifier: a shared verifier (default: one built from ``settings``).
    """

    def __init__(
        self,
        settings: AuthSettings,
        roles: Mapping[str, Mapping[str, Role]],
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.settings = settings
        self.roles = {service: dict(methods) for service, methods in roles.items()}
        self.verifier = verifier or settings.verifier()
        if not settings.required:
            log.warning("PACS_AUTH_REQUIRED=false: calls without a token are trusted as internal")

    def wrap(
        self, handler: MethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> MethodHandler:
        """``handler`` behind authentication, when its service is protected."""
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        if service not in self.roles:
            return handler
        role = self.roles[service].get(method, Role.ADMIN)
        metadata = handler_call_details.invocation_metadata
        name = f"{service}/{method}"
        authorize = self._authorizer(role, metadata, name)

        def unary(inner: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
            async def behaviour(request: Any, context: Any) -> Any:
                _CALLERS[id(context)] = caller = await authorize(context)
                try:
                    return await inner(request, context)
                except PermissionDeniedError as exc:  # another tenant named (tenant_for)
                    _audit_refusal(name, caller, context, exc)
                    raise
                finally:
                    _CALLERS.pop(id(context), None)

            return behaviour

        def stream(inner: Callable[[Any, Any], Any]) -> Any:
            async def behaviour(request: Any, context: Any) -> Any:
                _CALLERS[id(context)] = caller = await authorize(context)
                try:
                    async for item in iterate_response(inner, request, context):
                        yield item
                except PermissionDeniedError as exc:  # another tenant named (tenant_for)
                    _audit_refusal(name, caller, context, exc)
                    raise
                finally:
                    _CALLERS.pop(id(context), None)

            return behaviour

        return rewrap(handler, unary, stream)

    def _authorizer(self, role: Role, metadata: Any, name: str) -> Callable[[Any], Any]:
        async def authorize(context: Any) -> Caller:
            caller: Caller | None = None
            try:
                caller = await resolve_caller(
                    bearer_token(metadata), peer_common_name(context), self.verifier, self.settings
                )
                caller.require(role)
            except PacsError as exc:
                # The reason only: never the token, its claims, or the request.
                log.info("call refused", extra={"rpc": name, "reason": exc.message})
                _audit_refusal(name, caller, context, exc)
                raise
            return caller

        return authorize


def _audit_refusal(rpc: str, caller: Caller | None, context: Any, exc: PacsError) -> None:
    """A refused call is a Security Alert (PS3.15 A.5.3.11): bad token, missing role, or a
    request naming another tenant."""
    try:
        address = str(context.peer())
    except (AttributeError, RuntimeError):
        address = ""
    audit_events.emit(
        audit_events.rpc_refused(
            rpc.partition("/")[0],
            rpc,
            subject=caller.subject if caller else "",
            address=address,
            reason=exc.message,
            tenant=(caller.tenant or "") if caller else "",
        )
    )
