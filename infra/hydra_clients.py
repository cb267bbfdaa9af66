"""Provision the OAuth 2.0 clients of the local stack in hydra (idempotent; stdlib only).

Called by ``infra/hydra.sh start``. Each client uses the client-credentials grant and gets JWT
access tokens for the audience of the cloudpacs APIs.

How tenant and roles get into the token: as **scopes**, ``pacs:tenant:<tenant>`` and
``pacs:role:<role>``, listed in the client's allowed ``scope``. Hydra then puts them into the
token's ``scp`` claim (hydra runs with ``oauth2.client_credentials.default_grant_allowed_scope``,
so a token carries every scope its client is allowed even when the request names none). The
alternatives were worse: hydra never copies client ``metadata`` into access tokens, and its token
hook needs a web service of our own in the token path. Scopes are also what other providers
issue without extensions (Keycloak client scopes, Entra app roles in ``roles``), and
``pacs_common.auth.AuthSettings`` can read a dedicated tenant or roles claim instead
(``PACS_AUTH_TENANT_CLAIM``, ``PACS_AUTH_ROLES_CLAIM``) where a provider maps one.

Client ids and secrets are written to ``--env-file`` as ``KEY=value`` lines; on a re-run the
clients recorded there are updated in place (scopes, audience, secret), missing ones created.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# env-file prefix -> (client name, tenant, roles). PACS_CLI_* is what the `pacs` CLI uses
# (reindex and index checks need `admin`; `pacs audit` needs `audit-read`); PACS_APP_* is an
# application of tenant `default` without admin rights. Tests create clients of their own
# tenants through the admin API.
CLIENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "PACS_CLI": ("pacs-cli", "default", ("admin", "query", "retrieve", "ingest", "audit-read")),
    "PACS_APP": ("pacs-app", "default", ("ingest", "query", "retrieve")),
}
TENANT_SCOPE = "pacs:tenant:"
ROLE_SCOPE = "pacs:role:"


def _call(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310  (our own loopback admin URL)
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    return values


def _client_body(name: str, tenant: str, roles: tuple[str, ...], audience: str) -> dict[str, Any]:
    scopes = [f"{TENANT_SCOPE}{tenant}", *(f"{ROLE_SCOPE}{role}" for role in roles)]
    return {
        "client_name": name,
        "grant_types": ["client_credentials"],
        "response_types": ["token"],
        "token_endpoint_auth_method": "client_secret_post",
        "access_token_strategy": "jwt",
        "audience": [audience],
        "scope": " ".join(scopes),
    }


def provision(admin: str, audience: str, env_file: Path) -> None:
    """Create or update every client of :data:`CLIENTS`; record ids and secrets in env_file."""
    known = _read_env(env_file)
    out: dict[str, str] = {}
    for prefix, (name, tenant, roles) in CLIENTS.items():
        body = _client_body(name, tenant, roles, audience)
        client_id = known.get(f"{prefix}_CLIENT_ID", "")
        secret = known.get(f"{prefix}_CLIENT_SECRET", "") or secrets.token_urlsafe(24)
        body["client_secret"] = secret
        status, _found = (
            _call("GET", f"{admin}/admin/clients/{client_id}") if client_id else (404, None)
        )
        if status == 200:
            status, reply = _call("PUT", f"{admin}/admin/clients/{client_id}", body)
            action = "updated"
        else:
            status, reply = _call("POST", f"{admin}/admin/clients", body)
            action = "created"
        if status not in (200, 201) or not isinstance(reply, dict):
            raise SystemExit(f"hydra admin API refused client {name}: HTTP {status}: {reply}")
        out[f"{prefix}_CLIENT_ID"] = str(reply["client_id"])
        out[f"{prefix}_CLIENT_SECRET"] = secret
        print(f"==> hydra: client {name} {action} (tenant {tenant}, roles {', '.join(roles)})")
    env_file.write_text("".join(f"{key}={value}\n" for key, value in out.items()))


def main(argv: list[str]) -> None:
    """Parse the arguments and provision."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin", required=True, help="hydra admin URL")
    parser.add_argument("--audience", required=True, help="audience of the cloudpacs APIs")
    parser.add_argument("--env-file", required=True, type=Path, help="where ids/secrets go")
    args = parser.parse_args(argv)
    provision(args.admin.rstrip("/"), args.audience, args.env_file)


if __name__ == "__main__":
    main(sys.argv[1:])
