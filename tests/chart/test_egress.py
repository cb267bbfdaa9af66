"""Egress, read from the render as an operator would: every peer the configuration names is
reachable through the component's NetworkPolicy, and nothing the configuration does not name.

The peers are derived here from the values (site-registry destinations, Kafka bootstrap list,
S3 endpoint, database URL, the OpenID provider's JWKS, each component's ``egress`` entries),
independently of the templates; the policy is evaluated the way Kubernetes does (a connection is
allowed when one rule's ``to`` and ``ports`` both match it).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.chart.chart_support import (
    CI_NAMES,
    RenderRefusedError,
    by_component,
    ci_values_file,
    components,
    of_kind,
    render,
    values_of,
)

SCHEME_PORTS = {"https": 443, "http": 80}
POSTGRES_PORT = 5432


@dataclass(frozen=True)
class Peer:
    """One connection a component opens, as the configuration names it."""

    what: str
    host: str | None  # None: the address is not in the values (a URL inside an existing Secret)
    port: int | None
    cidrs: tuple[str, ...] = ()  # what the values say the host resolves to
    peers: tuple[str, ...] = ()  # in-cluster NetworkPolicyPeers (JSON), as the values give them
    ports: tuple[int, ...] = field(default=())  # further ports the values name


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _canon(peer: dict[str, Any]) -> str:
    return json.dumps(peer, sort_keys=True)


def _target(values: dict[str, Any], kind: str) -> dict[str, Any]:
    target: dict[str, Any] = values["networkPolicy"]["egress"][kind]
    return target


def _declared(target: dict[str, Any]) -> dict[str, Any]:
    return {
        "cidrs": tuple(target.get("cidrs") or ()),
        "peers": tuple(_canon(p) for p in target.get("peers") or ()),
        "ports": tuple(int(p) for p in target.get("ports") or ()),
    }


def _url_peer(what: str, url: str, default_port: int | None, target: dict[str, Any]) -> Peer:
    parts = urlsplit(url)
    port = parts.port or SCHEME_PORTS.get(parts.scheme, default_port)
    return Peer(what, parts.hostname, port, **_declared(target))


def configured_peers(values: dict[str, Any], name: str, c: dict[str, Any]) -> list[Peer]:
    """Every connection component ``name`` opens outside the release, from the values."""
    peers: list[Peer] = []
    registry = c["dicom"]["siteRegistry"] if c["dicom"]["enabled"] else {}
    for tenant, t in (registry.get("tenants") or {}).items():
        for site, s in (t.get("sites") or {}).items():
            for d in s.get("destinations") or []:
                what = f"registry destination {d['ae_title']} ({tenant}/{site})"
                peers.append(
                    Peer(
                        what,
                        d["host"],
                        int(d["port"]),
                        tuple(d.get("cidrs") or ()),
                        tuple(_canon(p) for p in d.get("peers") or ()),
                    )
                )
    if c["uses"]["kafka"]:
        target = _target(values, "kafka")
        for broker in values["kafka"]["bootstrap"].split(","):
            host, _, port = broker.strip().rpartition(":")
            peers.append(Peer(f"Kafka broker {broker}", host, int(port), **_declared(target)))
    if c["uses"]["s3"]:
        peers.append(_url_peer("S3", values["s3"]["endpoint"], None, _target(values, "s3")))
    if c["uses"].get("s3Grants"):
        storage_settings = values["components"].get("storage", {}).get("settings", {})
        grant = storage_settings.get("grant_s3_endpoint") or values["s3"]["endpoint"]
        peers.append(_url_peer("S3 through grants", grant, None, _target(values, "s3")))
    if c["uses"]["database"]:
        target = _target(values, "database")
        db = values["database"]
        if db["existingSecret"] or not db["url"]:
            peers.append(Peer("PostgreSQL (URL in a Secret)", None, None, **_declared(target)))
        else:
            peers.append(_url_peer("PostgreSQL", db["url"], POSTGRES_PORT, target))
    if c["uses"]["auth"]:
        auth = values["auth"]
        jwks = auth["jwksUrl"] or auth["issuer"].rstrip("/") + "/.well-known/jwks.json"
        peers.append(_url_peer("OpenID provider JWKS", jwks, None, _target(values, "oidc")))
    otlp = (values.get("tracing") or {}).get("otlpEndpoint")
    if otlp:
        peers.append(_url_peer("trace collector", otlp, None, _target(values, "otlp")))
    for key, entry in (c.get("egress") or {}).items():
        if entry.get("host"):
            peers.append(
                Peer(
                    f"egress.{key}",
                    entry["host"],
                    int(entry["port"]),
                    tuple(entry.get("cidrs") or ()),
                    tuple(_canon(p) for p in entry.get("peers") or ()),
                )
            )
    routes = c.get("routes") or {}
    for key, d in (routes.get("destinations") or {}).items():
        cidrs = tuple(d.get("cidrs") or ())
        in_cluster = tuple(_canon(p) for p in d.get("peers") or ())
        if d.get("kind") == "stow":
            url = urlsplit(d["url"])
            port = url.port or SCHEME_PORTS[url.scheme]
            peers.append(Peer(f"route {key}", url.hostname, port, cidrs, in_cluster))
        else:
            peers.append(Peer(f"route {key}", d["host"], int(d["port"]), cidrs, in_cluster))
    for tenant, f in (routes.get("prefetch") or {}).items():
        a = f["archive"]
        peers.append(
            Peer(
                f"prefetch archive of {tenant}",
                a["host"],
                int(a["port"]),
                tuple(a.get("cidrs") or ()),
                tuple(_canon(p) for p in a.get("peers") or ()),
            )
        )
    return peers


def _port_allowed(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("port") == port for p in ports)


def _ip_allowed(rule: dict[str, Any], host: str) -> bool:
    address = ipaddress.ip_address(host)
    for to in rule.get("to") or []:
        block = to.get("ipBlock")
        if not block or address not in ipaddress.ip_network(block["cidr"]):
            continue
        if not any(address in ipaddress.ip_network(e) for e in block.get("except") or []):
            return True
    return False


def _rule_names(rule: dict[str, Any], peer: Peer) -> bool:
    """The rule's destinations include everything the values say the peer is."""
    if not peer.cidrs and not peer.peers:
        return False
    blocks = {to["ipBlock"]["cidr"] for to in rule.get("to") or [] if "ipBlock" in to}
    others = {_canon(to) for to in rule.get("to") or [] if "ipBlock" not in to}
    return set(peer.cidrs) <= blocks and set(peer.peers) <= others


def allows(rules: list[dict[str, Any]], peer: Peer) -> bool:
    """Whether an egress rule list lets the connection through (Kubernetes' semantics)."""
    ports = [peer.port] if peer.port is not None else list(peer.ports)
    if not ports:
        return False
    for port in ports:
        ok = False
        for rule in rules:
            if not _port_allowed(rule, port):
                continue
            by_address = peer.host is not None and is_ip(peer.host)
            if (by_address and _ip_allowed(rule, peer.host or "")) or _rule_names(rule, peer):
                ok = True
        if not ok:
            return False
    return True


def _policies(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return by_component(docs, "NetworkPolicy")


@pytest.fixture(scope="module", params=CI_NAMES)
def ci(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    path = ci_values_file(request.param)
    return request.param, values_of([path]), render([path])


def test_every_configured_peer_has_an_egress_rule(
    ci: tuple[str, dict[str, Any], list[dict[str, Any]]],
) -> None:
    name, values, docs = ci
    policies = _policies(docs)
    blocked = []
    for component, c in components(values).items():
        rules = policies[component]["spec"].get("egress") or []
        for peer in configured_peers(values, component, c):
            if not allows(rules, peer):
                where = f"{peer.host}:{peer.port}" if peer.host else "its address"
                blocked.append(f"{component} -> {peer.what} at {where}")
    assert not blocked, f"ci/{name}: the NetworkPolicy blocks: " + "; ".join(blocked)


def test_egress_allows_nothing_the_configuration_does_not_name(
    ci: tuple[str, dict[str, Any], list[dict[str, Any]]],
) -> None:
    """Each egress destination and port comes from a configured peer, DNS, a dependency's gRPC
    port or the component's own ``networkPolicy.extraEgress``; no rule is open-ended."""
    name, values, docs = ci
    policies = _policies(docs)
    np = values["networkPolicy"]
    all_components = components(values)
    problems = []
    for component, c in all_components.items():
        extra = c["networkPolicy"]["extraEgress"]
        peers = configured_peers(values, component, c)
        cidrs = {cidr for p in peers for cidr in p.cidrs}
        cidrs |= {str(ipaddress.ip_network(p.host)) for p in peers if p.host and is_ip(p.host)}
        selectors = {s for p in peers for s in p.peers}
        selectors.add(
            _canon(
                {
                    "namespaceSelector": {"matchLabels": np["dns"]["namespaceSelector"]},
                    "podSelector": {"matchLabels": np["dns"]["podSelector"]},
                }
            )
        )
        ports = {p.port for p in peers if p.port} | {q for p in peers for q in p.ports} | {53}
        for dep in c["dependsOn"]:
            ports.add(int(all_components[dep]["grpc"]["port"]))
        for rule in policies[component]["spec"].get("egress") or []:
            if rule in extra:
                continue
            if not rule.get("to") or not rule.get("ports"):
                problems.append(f"{component}: a rule open to any destination or port: {rule}")
                continue
            for to in rule["to"]:
                if "ipBlock" in to:
                    if ipaddress.ip_network(to["ipBlock"]["cidr"]).prefixlen == 0:
                        problems.append(f"{component}: {to['ipBlock']['cidr']} is anywhere")
                    elif to["ipBlock"]["cidr"] not in cidrs:
                        problems.append(f"{component}: {to['ipBlock']['cidr']} names no peer")
                elif _canon(to) not in selectors and not _is_dependency(to, c["dependsOn"]):
                    problems.append(f"{component}: peer {to} names no configured peer")
            problems += [
                f"{component}: port {p['port']} is no configured peer's"
                for p in rule["ports"]
                if p["port"] not in ports
            ]
    assert not problems, f"ci/{name}: " + "; ".join(problems)


def _is_dependency(to: dict[str, Any], depends_on: list[str]) -> bool:
    labels = (to.get("podSelector") or {}).get("matchLabels") or {}
    return set(to) == {"podSelector"} and labels.get("app.kubernetes.io/component") in depends_on


def test_the_switch_leaves_egress_to_the_operator() -> None:
    """``networkPolicy.egress.enabled=false``: ingress is still restricted, egress is not
    touched by any policy of the release (the default deny included)."""
    docs = render([ci_values_file("production")], "--set", "networkPolicy.egress.enabled=false")
    policies = of_kind(docs, "NetworkPolicy")
    assert policies
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"], policy["metadata"]["name"]
        assert "egress" not in policy["spec"]


def _refusal(*args: str) -> str:
    with pytest.raises(RenderRefusedError) as refused:
        render([ci_values_file("production")], *args)
    return str(refused.value)


def test_a_hostname_without_cidrs_is_refused() -> None:
    message = _refusal("--set", "networkPolicy.egress.s3.cidrs=null")
    assert "s3.eu-central-1.amazonaws.com" in message
    assert "networkPolicy.egress.s3.cidrs" in message


def test_a_registry_destination_by_hostname_needs_its_cidrs(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "components:\n  gateway:\n    dicom:\n      siteRegistry:\n        tenants:\n"
        "          t1:\n            sites:\n              s1:\n                destinations:\n"
        "                  - {ae_title: WS1, host: ws1.hospital.example, port: 104}\n"
    )
    with pytest.raises(RenderRefusedError) as refused:
        render([ci_values_file("minimal"), values])
    # The schema refuses it, naming the destination and the missing value.
    assert "/components/gateway/dicom/siteRegistry/tenants/t1/sites/s1/destinations/0" in str(
        refused.value
    )
    assert "missing property 'cidrs'" in str(refused.value)


def test_an_egress_entry_by_hostname_needs_its_cidrs(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "components:\n  storage:\n    egress:\n"
        "      collector: {host: syslog.example, port: 6514}\n"
    )
    with pytest.raises(RenderRefusedError) as refused:
        render([ci_values_file("minimal"), values])
    assert "collector" in str(refused.value)
    assert "cidrs" in str(refused.value)


RELAY = """
components:
  relay:
    image:
      repository: cloudpacs/relay
    grpc:
      port: 50060
    egress:
      oru:
        host: 10.9.8.7
        port: 2575
        settings:
          oru_target: "{host}:{port}"
      collector:
        host: syslog.hospital.example
        port: 6514
        cidrs:
          - 10.9.0.0/24
        settings:
          syslog_url: "tls://{host}:{port}"
      unset:
        host: ""
        port: 1
        settings:
          unused: "{host}"
"""


def test_a_new_component_plugs_its_peers_in_with_egress_entries(tmp_path: Path) -> None:
    """A component block names its peers once: the settings its service reads and the egress
    rules both come from that entry; an entry without a host renders neither."""
    extra = tmp_path / "relay.yaml"
    extra.write_text(RELAY)
    files = [ci_values_file("minimal"), extra]
    values, docs = values_of(files), render(files)
    config = by_component(docs, "ConfigMap")["relay"]["data"]
    assert config["PACS_RELAY_ORU_TARGET"] == "10.9.8.7:2575"
    assert config["PACS_RELAY_SYSLOG_URL"] == "tls://syslog.hospital.example:6514"
    assert "PACS_RELAY_UNUSED" not in config
    rules = _policies(docs)["relay"]["spec"]["egress"]
    relay = components(values)["relay"]
    peers = configured_peers(values, "relay", relay)
    assert [p.what for p in peers] == ["egress.oru", "egress.collector"]
    assert all(allows(rules, p) for p in peers)
    assert not allows(rules, Peer("elsewhere", "10.9.8.8", 2575))


def test_the_gateway_reads_its_registry_without_the_chart_only_keys(tmp_path: Path) -> None:
    """A destination's ``cidrs`` and ``peers`` are for the NetworkPolicy: the rendered registry
    loads with the gateway's own strict loader, destinations and all."""
    from pacs_gateway.registry import load_registry  # noqa: PLC0415

    docs = render([ci_values_file("production")])
    config = next(
        d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-site-registry")
    )
    path = tmp_path / "sites.yaml"
    path.write_text(config["data"]["sites.yaml"])
    registry = load_registry(path)
    destination = registry.destination("north", "NORTH_VIEW")
    assert destination is not None
    assert (destination.host, destination.port) == ("viewer.north-clinic.example", 11112)
