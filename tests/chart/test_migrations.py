"""The index schema is migrated by a Helm pre-install/pre-upgrade hook Job, before any pod of
the release changes, and the indexer pods then only check it (docs/operations.md, "Upgrades")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pacs_indexer.migrate import MigrationSettings

from tests.chart.chart_support import (
    CI_NAMES,
    by_component,
    ci_values_file,
    of_kind,
    render,
    values_of,
)

HOOK = "pre-install,pre-upgrade"


def _hooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The migration's hook resources (no other template of the chart is a hook)."""
    return [d for d in docs if "helm.sh/hook" in _annotations(d)]


def _annotations(doc: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = doc["metadata"].get("annotations", {})
    return annotations


@pytest.mark.parametrize("name", CI_NAMES)
def test_the_migration_runs_as_a_hook_job_with_the_indexers_image_and_database(
    name: str,
) -> None:
    docs = render([ci_values_file(name)])
    values = values_of([ci_values_file(name)])
    hooks = _hooks(docs)
    jobs = of_kind(hooks, "Job")
    assert len(jobs) == 1, f"ci/{name}: one migration Job"
    job = jobs[0]
    annotations = _annotations(job)
    assert annotations["helm.sh/hook"] == HOOK
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    indexer = by_component(docs, "Deployment")["indexer"]["spec"]["template"]["spec"]
    (served,) = indexer["containers"]
    assert container["image"] == served["image"]
    assert container["args"] == ["migrate"]  # the image's entrypoint is pacs-indexer
    assert container["securityContext"] == served["securityContext"]

    env = {e["name"]: e for e in container["env"]}
    url_ref = env["PACS_INDEXER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    served_ref = next(e for e in served["env"] if e["name"] == "PACS_INDEXER_DATABASE_URL")
    assert url_ref["key"] == served_ref["valueFrom"]["secretKeyRef"]["key"]
    if values["database"]["existingSecret"]:
        assert url_ref["name"] == values["database"]["existingSecret"]
    else:
        # The chart's own Secret does not exist yet at pre-install: the hook brings a copy.
        (secret,) = [
            s for s in of_kind(hooks, "Secret") if s["metadata"]["name"] == url_ref["name"]
        ]
        chart_secret = next(
            s
            for s in of_kind(docs, "Secret")
            if s["metadata"]["name"] == served_ref["valueFrom"]["secretKeyRef"]["name"]
        )
        assert secret["data"] == chart_secret["data"]
    # Every variable the Job gets is one `pacs-indexer migrate` reads (and it needs no other).
    fields = {f"PACS_INDEXER_{field.upper()}" for field in MigrationSettings.model_fields}
    assert set(env) <= fields

    # What the Job needs exists before it: same hook, lower weight.
    needs = [d for d in hooks if d is not job]
    assert {d["kind"] for d in needs} >= {"ServiceAccount"}
    assert pod["serviceAccountName"] in {d["metadata"]["name"] for d in needs}
    for doc in needs:
        assert _annotations(doc)["helm.sh/hook"] == HOOK
        assert int(_annotations(doc)["helm.sh/hook-weight"]) < int(
            annotations["helm.sh/hook-weight"]
        )

    # The pods never migrate: the hook did.
    config = by_component(docs, "ConfigMap")["indexer"]["data"]
    assert config["PACS_INDEXER_MIGRATE_ON_START"] == "false"


@pytest.mark.parametrize("name", CI_NAMES)
def test_the_hooks_network_policy_allows_the_database_like_the_indexers(name: str) -> None:
    docs = render([ci_values_file(name)])
    if not values_of([ci_values_file(name)])["networkPolicy"]["enabled"]:
        assert not of_kind(_hooks(docs), "NetworkPolicy")
        return
    (policy,) = of_kind(_hooks(docs), "NetworkPolicy")
    selected = policy["spec"]["podSelector"]["matchLabels"]
    job = of_kind(_hooks(docs), "Job")[0]
    assert selected.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert "ingress" not in policy["spec"]  # nothing calls the Job
    indexer = by_component(docs, "NetworkPolicy")["indexer"]["spec"]
    if "egress" not in indexer:
        return
    database_rules = [
        r for r in indexer["egress"] if any(p.get("port") == 5432 for p in r["ports"])
    ]
    assert database_rules
    for rule in database_rules:
        assert rule in policy["spec"]["egress"]


def test_without_the_hook_the_indexer_migrates_at_start(tmp_path: Path) -> None:
    off = tmp_path / "off.yaml"
    off.write_text("database:\n  migrations:\n    enabled: false\n")
    docs = render([ci_values_file("production"), off])
    assert not _hooks(docs)
    config = by_component(docs, "ConfigMap")["indexer"]["data"]
    assert "PACS_INDEXER_MIGRATE_ON_START" not in config  # default: true
