"""Render the cloudpacs chart with the helm binary ``infra/helm.sh`` installs, and read the values
the way an operator does: chart defaults overlaid with a values file, each component merged over
``componentDefaults``.

The tests under ``tests/chart`` derive what a configuration asks for (which peers each component
connects to, how long a pod needs to stop) from these values with their own code, then check
the render against it; they never reuse the templates' logic.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
# CLOUDPACS_CHART points the tests at another copy of the chart (an older commit's, to see a
# test fail without the change it covers).
CHART = Path(os.environ.get("CLOUDPACS_CHART", REPO / "charts" / "cloudpacs"))
CI_DIR = CHART / "ci"
HELM = REPO / ".cache" / "bin" / "helm"
# The release infra/helm.sh renders (and the goldens hold).
RELEASE = "pacs"
NAMESPACE = "pacs"
KUBE_VERSION = "1.35.0"

CI_NAMES = sorted(p.name.removesuffix("-values.yaml") for p in CI_DIR.glob("*-values.yaml"))


def ensure_helm() -> Path:
    """The pinned helm binary, installed by ``infra/helm.sh install`` when missing."""
    if not HELM.is_file():
        subprocess.run([str(REPO / "infra" / "helm.sh"), "install"], check=True)
    return HELM


class RenderRefusedError(Exception):
    """helm refused to render (schema or a template's ``fail``); the message is helm's."""


def render(values_files: list[Path], *extra: str) -> list[dict[str, Any]]:
    """The chart rendered with ``values_files`` (and extra helm flags such as ``--set``).

    Raises:
        RenderRefusedError: helm exited non-zero.
    """
    args = [str(ensure_helm()), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBE_VERSION]
    for path in values_files:
        args += ["--values", str(path)]
    result = subprocess.run([*args, *extra], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RenderRefusedError(result.stderr.strip())
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def ci_values_file(name: str) -> Path:
    return CI_DIR / f"{name}-values.yaml"


def coalesce(base: Any, override: Any) -> Any:
    """Helm's merge of user values over defaults: maps merge, null deletes, the rest replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = copy.deepcopy(base)
        for key, value in override.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = coalesce(merged.get(key), value)
        return merged
    return copy.deepcopy(override)


def values_of(values_files: list[Path]) -> dict[str, Any]:
    """The chart's values.yaml overlaid with each file in turn."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in values_files:
        values = coalesce(values, yaml.safe_load(path.read_text()) or {})
    return values


def overlay(base: Any, override: Any) -> Any:
    """``mergeOverwrite`` of the templates: maps merge, lists and scalars replace."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = copy.deepcopy(base)
        for key, value in override.items():
            merged[key] = overlay(merged.get(key), value)
        return merged
    return copy.deepcopy(override)


def components(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every enabled component, merged over componentDefaults."""
    merged = {
        name: overlay(values["componentDefaults"], own or {})
        for name, own in values["components"].items()
    }
    return {name: c for name, c in merged.items() if c["enabled"]}


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def component_of(doc: dict[str, Any]) -> str | None:
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def by_component(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The one resource of ``kind`` per component (ConfigMaps: the settings one)."""
    found: dict[str, dict[str, Any]] = {}
    for doc in of_kind(docs, kind):
        name = component_of(doc)
        if name is None:
            continue
        if kind == "ConfigMap" and not doc["metadata"]["name"].endswith("-config"):
            continue
        if kind == "Service" and doc["metadata"]["name"].endswith("-dicom"):
            continue
        found[name] = doc
    return found
