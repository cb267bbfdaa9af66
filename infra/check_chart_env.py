"""Check the environment the Helm chart gives each component against the services' settings.

Usage: ``uv run --frozen python infra/check_chart_env.py RENDER.yaml...`` (``helm template``
output; run by ``infra/helm.sh lint`` over the renders of every ``ci/*-values.yaml``).

For every Deployment, the ``PACS_*`` variables of its ConfigMap (``envFrom``) and of its ``env``
list must be

* read by the component's settings class: the ``ServiceSettings`` subclass in
  ``pacs_<component>.settings``, introspected (``env_prefix`` + field name, or the field's
  validation alias; nested settings such as ``KafkaSettings`` with their own prefix). A variable
  nobody reads is an error: it is a setting the operator believes is applied and is not (a typo,
  or a chart that drifted from the code). A component without a settings module is an error
  too: nothing would read its settings.
* every other variable (``extraEnv``) must be one a library in the image reads (``OTHER_READERS``:
  OpenTelemetry, botocore, gRPC core, ...), for the same reason.
* accepted by that class: the values are loaded with it, as the service would at start-up
  (values from Secrets get a well-formed stand-in).

A component whose settings authorize callers (an ``auth: AuthSettings`` field) must get its issuer
from the chart (``PACS_AUTH_ISSUER``; the code's default is the local stack's hydra), and must
require tokens (``PACS_AUTH_REQUIRED`` never false in a deployment).

Exits 1 and names each offending variable on failure.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pacs_common.auth import AuthSettings
from pacs_common.settings import ServiceSettings
from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings

SERVICES = Path(__file__).resolve().parents[1] / "services"
SECRET_STANDINS = {"DATABASE_URL": "postgresql+psycopg://user:secret@db:5432/pacs"}
# Variables outside PACS_* that something in the images reads, by prefix: who reads them.
OTHER_READERS = {
    "OTEL_": "the OpenTelemetry SDK (pacs_common.telemetry)",
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client (the gateway's workers)",
    "AWS_": "botocore (S3 credentials, endpoints)",
    "GRPC_": "gRPC core (tracing, DNS resolver)",
    "HTTP_PROXY": "httpx and botocore",
    "HTTPS_PROXY": "httpx and botocore",
    "NO_PROXY": "httpx and botocore",
    "SSL_CERT_FILE": "OpenSSL (the default trust store)",
    "SSL_CERT_DIR": "OpenSSL (the default trust store)",
    "TZ": "the C library",
}


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable a pydantic-settings class reads, nested settings included."""
    config = cls.model_config
    prefix = str(config.get("env_prefix") or "")
    delimiter = config.get("env_nested_delimiter")
    names: set[str] = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            own = {alias}
        elif isinstance(alias, AliasChoices):
            own = {choice for choice in alias.choices if isinstance(choice, str)}
        else:
            own = {prefix + name}
        names |= own
        nested = field.annotation
        if inspect.isclass(nested) and issubclass(nested, BaseSettings):
            # A nested BaseSettings built by its default factory reads its own prefix.
            names |= env_names(nested)
            if delimiter:
                names |= {
                    f"{outer}{delimiter}{inner}" for outer in own for inner in nested.model_fields
                }
    return {n.upper() for n in names}


def service_settings() -> dict[str, type[ServiceSettings]]:
    """The settings class of every service package under services/, by component name."""
    found: dict[str, type[ServiceSettings]] = {}
    for module_file in sorted(SERVICES.glob("*/src/pacs_*/settings.py")):
        package = module_file.parent.name
        if package == "pacs_common":
            continue
        module = importlib.import_module(f"{package}.settings")
        classes = [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, ServiceSettings)
            and c is not ServiceSettings
            and c.__module__ == module.__name__
        ]
        if classes:
            found[package.removeprefix("pacs_").replace("_", "-")] = classes[0]
    return found


def deployments(render: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(component, environment) of each Deployment in one render; Secret-backed values are
    replaced by a well-formed stand-in."""
    docs = [d for d in yaml.safe_load_all(render.read_text()) if d]
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(config_maps[source["configMapRef"]["name"]].get("data") or {})
        for var in container.get("env", []):
            standin = next(
                (v for suffix, v in SECRET_STANDINS.items() if var["name"].endswith(suffix)),
                "secret",
            )
            env[var["name"]] = var.get("value", standin)
        yield component, env


def load_with(cls: type[ServiceSettings], env: dict[str, str]) -> Any:
    """Instantiate ``cls`` from exactly ``env``, as the service would at start-up."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return cls()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def auth_problems(settings: Any, env: dict[str, str]) -> list[str]:
    """What is wrong with the caller authorization of a component's loaded settings."""
    auth = getattr(settings, "auth", None)
    if not isinstance(auth, AuthSettings):
        return []
    problems = []
    if "PACS_AUTH_ISSUER" not in env:
        problems.append(
            "authorizes callers but gets no PACS_AUTH_ISSUER (set uses.auth in the chart)"
        )
    if not auth.required:
        problems.append("PACS_AUTH_REQUIRED is false: a deployment must require caller tokens")
    return problems


def check(renders: list[Path]) -> list[str]:
    """Problems found in the renders, one line each (empty: all good)."""
    classes = service_settings()
    read_by = {name: env_names(cls) for name, cls in classes.items()}
    problems: list[str] = []
    for render in renders:
        for component, env in deployments(render):
            where = f"{render.name} {component}"
            if component not in classes:
                problems.append(
                    f"{where}: no pacs_{component.replace('-', '_')}.settings: "
                    "nothing would read the settings the chart renders for it"
                )
                continue
            known = read_by[component]
            unread = sorted(v for v in env if v.startswith("PACS_") and v not in known)
            reader = classes[component].__name__
            problems += [f"{where}: {var} is not a setting {reader} reads" for var in unread]
            problems += [
                f"{where}: {var} is read by nothing in the image (known: "
                f"{', '.join(sorted(OTHER_READERS))})"
                for var in sorted(env)
                if not var.startswith("PACS_") and not var.startswith(tuple(OTHER_READERS))
            ]
            try:
                settings = load_with(classes[component], env)
            except ValidationError as exc:
                problems.append(f"{where}: rejected by {reader}: {exc}")
                continue
            problems += [f"{where}: {problem}" for problem in auth_problems(settings, env)]
            if not unread:
                print(f"  {where}: {len(env)} variables, all read and accepted by {reader}")
    return problems


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    problems = check([Path(a) for a in argv])
    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
