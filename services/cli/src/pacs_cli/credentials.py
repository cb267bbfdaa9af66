"""The `pacs` CLI's bearer token: the OAuth 2.0 client-credentials grant.

``infra/up.sh`` (``make up``) provisions a client of tenant ``default`` with the role ``admin``
in the local hydra and writes its id, secret and the token URL into ``.cache/run/infra.env``
as ``PACS_CLI_CLIENT_ID``, ``PACS_CLI_CLIENT_SECRET`` and ``PACS_CLI_TOKEN_URL``; the
environment overrides them (another provider, another client).
"""

from __future__ import annotations

from pacs_common.local import infra_environment
from pacs_common.oauth_client import ClientCredentials
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "PACS_CLI_"


class CliSettings(BaseSettings):
    """How the CLI gets its token (``PACS_CLI_*``)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    client_id: str | None = None
    client_secret: SecretStr | None = None
    token_url: str = "http://127.0.0.1:14444/oauth2/token"  # noqa: S105  (a URL, not a secret)
    audience: str = "cloudpacs"


def cli_settings() -> CliSettings:
    """Settings from the environment, then from ``infra/up.sh``'s env file."""
    env = infra_environment()
    values = {
        name: env[f"{PREFIX}{name.upper()}"]
        for name in CliSettings.model_fields
        if f"{PREFIX}{name.upper()}" in env
    }
    return CliSettings.model_validate(values)


def cli_credentials(settings: CliSettings | None = None) -> ClientCredentials:
    """The CLI's OAuth client.

    Raises:
        SystemExit: no client is configured (the message says how to get one).
    """
    settings = settings or cli_settings()
    if not settings.client_id or settings.client_secret is None:
        raise SystemExit(
            "no OAuth client for the pacs CLI: run `make up` (infra/up.sh provisions one into "
            ".cache/run/infra.env) or set PACS_CLI_CLIENT_ID and PACS_CLI_CLIENT_SECRET"
        )
    return ClientCredentials(
        settings.token_url,
        settings.client_id,
        settings.client_secret,
        audience=settings.audience,
    )
