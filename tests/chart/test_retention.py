"""The retention CronJob as an operator reads the render: off by default; when on, it runs
``pacs retention run`` against the indexer as identity ``cli`` with the admin client's
Secret, and the NetworkPolicies let exactly its pods reach the indexer; without the token
endpoint or the client's Secret the chart refuses to render."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.chart_support import RenderRefusedError, ci_values_file, of_kind, render


def _cronjobs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return of_kind(docs, "CronJob")


def test_off_by_default() -> None:
    assert _cronjobs(render([ci_values_file("minimal")])) == []


def test_the_job_runs_pacs_retention_against_the_indexer_as_cli() -> None:
    docs = render([ci_values_file("everything")])
    (job,) = _cronjobs(docs)
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    certificates = {c["spec"]["commonName"] for c in of_kind(docs, "Certificate")}

    assert job["spec"]["schedule"] == "0 3 * * 0"
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert container["args"][:3] == ["retention", "run", "--indexer"]
    assert container["args"][3].startswith("pacs-indexer.pacs.svc.")
    assert "--dry-run" in container["args"]
    assert env["PACS_CLI_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == (
        "pacs-retention-client"
    )
    assert env["PACS_CLI_TOKEN_URL"]["value"].endswith("/token")
    assert "cli" in certificates, "the job presents the identity the indexer allows"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    own = policies["pacs-retention"]["spec"]
    assert "Ingress" in own["policyTypes"] and not own.get("ingress"), "nothing comes in"
    assert any(
        rule["to"][0]
        .get("podSelector", {})
        .get("matchLabels", {})
        .get("app.kubernetes.io/component")
        == "indexer"
        for rule in own["egress"]
    )
    into_indexer = policies["pacs-retention-to-indexer"]["spec"]
    assert into_indexer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "indexer"
    source = into_indexer["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert source["app.kubernetes.io/component"] == "retention"


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("retention.oauth.tokenUrl=", "retention.oauth.tokenUrl"),
        ("retention.oauth.existingSecret=", "retention.oauth.existingSecret"),
    ],
)
def test_refused_without_the_token_endpoint_or_the_client(setting: str, named: str) -> None:
    with pytest.raises(RenderRefusedError) as refused:
        render([ci_values_file("everything")], "--set", setting)
    assert named in str(refused.value)


def test_one_job_per_tenant_each_with_its_own_client() -> None:
    jobs = {
        job["metadata"]["name"]: job["spec"]["jobTemplate"]["spec"]["template"]["spec"][
            "containers"
        ][0]
        for job in _cronjobs(render([ci_values_file("production")]))
    }

    assert sorted(jobs) == ["pacs-cloudpacs-retention-north", "pacs-cloudpacs-retention-south"]
    for tenant in ("north", "south"):
        container = jobs[f"pacs-cloudpacs-retention-{tenant}"]
        env = {e["name"]: e for e in container["env"]}
        assert container["args"][-2:] == ["--tenant", tenant]
        assert env["PACS_CLI_CLIENT_ID"]["valueFrom"]["secretKeyRef"]["name"] == (
            f"retention-{tenant}"
        )
