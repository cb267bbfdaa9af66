"""Verify OAuth 2.0 bearer JWTs against the issuer's JWKS (PyJWT, never hand-written crypto).

A token is accepted only when its signature checks with a key of the issuer's JSON Web Key Set
under an asymmetric algorithm of :data:`ASYMMETRIC_ALGORITHMS` (never ``none``, never an HMAC
algorithm, which would let a public key serve as a shared secret), and when ``iss``, ``aud``,
``exp`` and ``nbf`` hold (RFC 9068 section 4; ``exp`` is required, ``nbf`` checked when
present), within a small clock leeway.

Keys are cached (``PyJWKClient``'s JWK-set cache). A token signed with a key id the cache does
not know makes the verifier fetch the set again, which is how an issuer's key rotation is picked
up without a restart; such forced fetches happen at most once per ``min_refresh_s``, so a flood
of forged tokens with made-up key ids cannot turn the service into a JWKS-fetching proxy.
Verification blocks (a JWKS fetch is an HTTP request): async code runs it in a thread
(:meth:`TokenVerifier.verify`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError

from pacs_common.errors import UnauthenticatedError, UnavailableError

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def require_asymmetric(algorithms: Iterable[str]) -> list[str]:
    """``algorithms`` as a sorted list, if it is not empty and all are asymmetric.

    Raises:
        ValueError: an HMAC algorithm (anyone holding the issuer's public key could mint
            tokens), ``none`` (anyone could), or no algorithm at all.
    """
    chosen = sorted(set(algorithms))
    refused = sorted(set(chosen) - ASYMMETRIC_ALGORITHMS)
    if refused or not chosen:
        raise ValueError(f"only asymmetric JWT algorithms are allowed, not {refused}")
    return chosen


class TokenVerifier:
    """Checks bearer JWTs of one issuer for one audience.

    Args:
        issuer: the exact ``iss`` the tokens must carry.
        audience: a value the token's ``aud`` must contain.
        jwks_url: where the issuer publishes its keys.
        algorithms: accepted signature algorithms (asymmetric only).
        leeway_s: tolerated clock skew for ``exp``/``nbf``, seconds.
        jwks_cache_s: how long a fetched key set is trusted before it is fetched again.
        min_refresh_s: least time between two fetches forced by an unknown key id.
        timeout_s: HTTP timeout of a JWKS fetch.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        algorithms: frozenset[str] | list[str] = frozenset({"RS256", "ES256"}),
        leeway_s: float = 30.0,
        jwks_cache_s: float = 300.0,
        min_refresh_s: float = 10.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.algorithms = require_asymmetric(algorithms)
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.min_refresh_s = min_refresh_s
        self._jwks = PyJWKClient(
            jwks_url, cache_keys=False, lifespan=max(1, int(jwks_cache_s)), timeout=int(timeout_s)
        )
        self._lock = threading.Lock()
        self._last_forced = float("-inf")

    async def verify(self, token: str) -> dict[str, Any]:
        """:meth:`verify_blocking` in a worker thread (a JWKS fetch must not stall the loop)."""
        return await asyncio.to_thread(self.verify_blocking, token)

    def verify_blocking(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` once signature, ``iss``, ``aud``, ``exp`` and ``nbf`` hold.

        Raises:
            UnauthenticatedError: the token is malformed, forged, expired, not yet valid, or
                for another issuer or audience. The message names the reason, never the token.
            UnavailableError: the issuer's key set cannot be fetched.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise UnauthenticatedError("malformed bearer token") from exc
        if header.get("alg") not in self.algorithms:
            raise UnauthenticatedError("bearer token signed with a refused algorithm")
        key = self._signing_key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthenticatedError("bearer token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise UnauthenticatedError("bearer token not yet valid") from exc
        except jwt.InvalidAudienceError as exc:
            raise UnauthenticatedError("bearer token for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise UnauthenticatedError("bearer token from another issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise UnauthenticatedError("bearer token signature does not verify") from exc
        except jwt.InvalidTokenError as exc:
            raise UnauthenticatedError(f"invalid bearer token ({type(exc).__name__})") from exc
        return claims

    def _signing_key(self, kid: object) -> PyJWK:
        """The issuer's key ``kid``, fetching the key set again (rate-limited) when unknown."""
        if not isinstance(kid, str) or not kid:
            raise UnauthenticatedError("bearer token names no key id")
        try:
            key = self._match(self._jwks.get_signing_keys(), kid)
            if key is not None:
                return key
            with self._lock:
                if time.monotonic() - self._last_forced < self.min_refresh_s:
                    raise UnauthenticatedError("bearer token signed with an unknown key")
                self._last_forced = time.monotonic()
            key = self._match(self._jwks.get_signing_keys(refresh=True), kid)
        except PyJWKClientConnectionError as exc:
            raise UnavailableError("the token issuer's key set cannot be fetched") from exc
        except PyJWKClientError as exc:
            raise UnauthenticatedError("the token issuer's key set has no usable key") from exc
        if key is None:
            raise UnauthenticatedError("bearer token signed with an unknown key")
        return key

    @staticmethod
    def _match(keys: list[PyJWK], kid: str) -> PyJWK | None:
        return next((key for key in keys if key.key_id == kid), None)
