"""Bearer tokens for calling cloudpacs APIs: the OAuth 2.0 client-credentials grant.

RFC 6749 section 4.4: the client posts its id and secret to the issuer's token endpoint and
gets an access token, kept here until shortly before it expires. ``audience`` is sent because
hydra (like Auth0) issues a token for an audience only when asked for it. Blocking (stdlib
HTTP); async callers use :meth:`ClientCredentials.token_async`, async channels
:func:`bearer_interceptors`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import grpc
from pydantic import SecretStr

from pacs_common.errors import UnauthenticatedError, UnavailableError

REFRESH_MARGIN_S = 30.0
"""A cached token is renewed this long before it expires."""


class ClientCredentials:
    """Fetches and caches access tokens of one OAuth client."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr | str,
        *,
        audience: str | None = "cloudpacs",
        scope: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = (
            client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        )
        self.audience = audience
        self.scope = scope
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def token(self) -> str:
        """A valid access token (cached, or fetched now).

        Raises:
            UnauthenticatedError: the token endpoint refused the client's credentials.
            UnavailableError: the token endpoint cannot be reached.
        """
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at - REFRESH_MARGIN_S:
                self._token, lifetime = self._fetch()
                self._expires_at = time.monotonic() + lifetime
            return self._token

    async def token_async(self) -> str:
        """:meth:`token` in a worker thread."""
        return await asyncio.to_thread(self.token)

    def metadata(self) -> tuple[tuple[str, str]]:
        """gRPC call metadata carrying the token."""
        return (("authorization", f"Bearer {self.token()}"),)

    def _fetch(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._secret.get_secret_value(),
        }
        if self.audience:
            form["audience"] = self.audience
        if self.scope:
            form["scope"] = self.scope
        request = urllib.request.Request(  # noqa: S310  (URL from our own settings)
            self.token_url,
            data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code in (400, 401, 403):
                raise UnauthenticatedError(
                    f"the token endpoint refused client {self.client_id} (HTTP {exc.code})"
                ) from exc
            raise UnavailableError(f"the token endpoint answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise UnavailableError(f"the token endpoint {self.token_url} is unreachable") from exc
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise UnavailableError("the token endpoint answered without an access token")
        return token, float(body.get("expires_in") or 60)


class _BearerMixin:
    def __init__(self, credentials: ClientCredentials) -> None:
        self._credentials = credentials

    async def _with_token(self, details: Any) -> Any:
        token = await self._credentials.token_async()
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata["authorization"] = f"Bearer {token}"
        return details._replace(metadata=metadata)


class _UnaryUnary(_BearerMixin, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._with_token(details), request)


class _UnaryStream(_BearerMixin, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._with_token(details), request)


class _StreamUnary(_BearerMixin, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(await self._with_token(details), requests)


class _StreamStream(_BearerMixin, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(await self._with_token(details), requests)


def bearer_interceptors(credentials: ClientCredentials) -> list[Any]:
    """Client interceptors of an async channel that send ``credentials``' token on every call."""
    return [
        _UnaryUnary(credentials),
        _UnaryStream(credentials),
        _StreamUnary(credentials),
        _StreamStream(credentials),
    ]
