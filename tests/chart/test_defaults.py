"""Safer defaults and their documentation, read from the render: /metrics is open to the
monitoring namespace only, and every Service and NetworkPolicy the chart creates is named in
README's values table (generated from values.yaml) by the value that controls it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.chart_support import (
    CHART,
    CI_NAMES,
    RenderRefusedError,
    ci_values_file,
    component_of,
    of_kind,
    render,
)

BEGIN, END = "<!-- values:begin -->", "<!-- values:end -->"


def _values_table() -> str:
    readme = (CHART / "README.md").read_text()
    return readme.split(BEGIN, 1)[1].split(END, 1)[0]


def _generic_name(doc: dict[str, Any], fullname: str) -> str:
    """The resource's name as the documentation writes it: `<fullname>-<component>...`."""
    name: str = doc["metadata"]["name"]
    component = component_of(doc)
    if component is not None:
        name = name.replace(f"{fullname}-{component}", "<fullname>-<component>", 1)
    return name.replace(fullname, "<fullname>", 1)


@pytest.mark.parametrize("name", CI_NAMES)
def test_every_service_and_network_policy_is_in_the_values_table(name: str) -> None:
    docs = render([ci_values_file(name)])
    deny = next(d for d in of_kind(docs, "NetworkPolicy") if component_of(d) is None)
    fullname = deny["metadata"]["name"].removesuffix("-default-deny")
    table = _values_table()
    missing = [
        f"{doc['kind']} `{_generic_name(doc, fullname)}`"
        for doc in of_kind(docs, "Service") + of_kind(docs, "NetworkPolicy")
        if f"{doc['kind']} `{_generic_name(doc, fullname)}`" not in table
    ]
    assert not missing, f"ci/{name}: not in README's values table: {sorted(set(missing))}"


def _metrics_sources(policy: dict[str, Any]) -> list[dict[str, Any]]:
    rules = policy["spec"]["ingress"]
    rule = next(r for r in rules if {"port": "metrics", "protocol": "TCP"} in r.get("ports", []))
    sources: list[dict[str, Any]] = rule["from"]
    return sources


def test_metrics_are_open_to_the_monitoring_namespace_only() -> None:
    """ci/minimal keeps the default: a namespace selector with labels, never every namespace."""
    docs = render([ci_values_file("minimal")])
    for policy in of_kind(docs, "NetworkPolicy"):
        if component_of(policy) is None:
            continue
        assert _metrics_sources(policy) == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ], policy["metadata"]["name"]


def test_metrics_open_to_every_namespace_only_when_asked() -> None:
    with pytest.raises(RenderRefusedError) as refused:
        render([ci_values_file("minimal")], "--set", "networkPolicy.metrics.namespaceSelector=null")
    assert "networkPolicy.metrics needs namespaceSelector" in str(refused.value)
