#!/usr/bin/env bash
# infra/helm.sh — check the cloudpacs Helm chart, offline.
#
#   infra/helm.sh lint           helm lint --strict, render and validate every ci/ values file
#                                against Kubernetes 1.33 and 1.35, compare with the golden
#                                renders, run tests/chart (egress rules for every configured peer
#                                and nothing else, grace period >= shutdown budget, every rendered
#                                variable read by its service via infra/check_chart_env.py), check
#                                that the chart refuses what it must (no issuer, TLS-only without
#                                TLS, ...), that a TLS-only gateway has no plaintext DICOM port,
#                                and that README's values table is current
#   infra/helm.sh template NAME  print the render of charts/cloudpacs/ci/NAME-values.yaml
#   infra/helm.sh update-golden  rewrite charts/cloudpacs/ci/golden/*.yaml after a deliberate change
#   infra/helm.sh docs           regenerate the values table in charts/cloudpacs/README.md
#   infra/helm.sh install        only install the tools
#
# Tools land in .cache: helm from the Go module proxy (`go install`, needs Go), and
# kubernetes-validate (which ships the Kubernetes JSON schemas, so validation needs no network)
# in the virtualenv .cache/venv-helm, made with uv.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$REPO/charts/cloudpacs"
CI_DIR="$CHART/ci"
GOLDEN_DIR="$CI_DIR/golden"
BIN_DIR="$REPO/.cache/bin"
VENV="$REPO/.cache/venv-helm"

HELM_VERSION="v3.22.0"
KUBERNETES_VALIDATE_VERSION="1.37.0"
# Versions the manifests must be valid for; helm v3 built by `go install` assumes Kubernetes
# 1.20 unless told, so every helm call names one.
KUBE_VERSIONS=(1.33.0 1.35.0)
GOLDEN_KUBE_VERSION="1.35.0"
RELEASE="pacs"
NAMESPACE="pacs"

HELM="$BIN_DIR/helm"
KV="$VENV/bin/kubernetes-validate"

log() { printf '==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

install_helm() {
    if [[ -x "$HELM" ]] && [[ "$(cat "$BIN_DIR/helm.version" 2>/dev/null)" == "$HELM_VERSION" ]]; then
        return
    fi
    command -v go >/dev/null || die "Go is needed to install helm ($HELM_VERSION) from the module proxy"
    log "installing helm $HELM_VERSION into $BIN_DIR (go install)"
    mkdir -p "$BIN_DIR"
    GOBIN="$BIN_DIR" GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    printf '%s\n' "$HELM_VERSION" >"$BIN_DIR/helm.version"
}

install_validator() {
    if [[ -x "$KV" ]] && [[ "$("$KV" --version 2>/dev/null)" == "$KUBERNETES_VALIDATE_VERSION" ]]; then
        return
    fi
    command -v uv >/dev/null || die "uv is needed to install kubernetes-validate"
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
    uv venv --quiet --allow-existing --python 3.11 "$VENV"
    # --reinstall: a venv made under another path (a copied or shared .cache) keeps the package
    # but its script's shebang names the old interpreter, so the version check above failed.
    uv pip install --quiet --reinstall --python "$VENV/bin/python" \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
}

install_tools() {
    install_helm
    install_validator
}

ci_names() {
    local f
    for f in "$CI_DIR"/*-values.yaml; do
        basename "$f" -values.yaml
    done
}

# render NAME KUBE_VERSION — the chart rendered with ci/NAME-values.yaml, on stdout.
render() {
    "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
        --values "$CI_DIR/$1-values.yaml" --kube-version "$2"
}

# values_doc check|write — the README table generated from the `# --` comments of values.yaml.
values_doc() {
    "$VENV/bin/python" - "$1" "$CHART/values.yaml" "$CHART/README.md" <<'PY'
"""Generate (or check) the values table of README.md from values.yaml's `# --` comments."""
import json
import re
import sys

import yaml

mode, values_path, readme_path = sys.argv[1:4]
BEGIN, END = "<!-- values:begin -->", "<!-- values:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(?:\s|$)")

values = yaml.safe_load(open(values_path))
rows, undocumented, stack, pending = [], [], [], None
for line in open(values_path).read().splitlines():
    stripped = line.strip()
    if stripped.startswith("# --"):
        pending = stripped[4:].strip()
        continue
    match = KEY.match(line)
    if not match or stripped.startswith("-"):
        continue
    indent, key = len(match.group(1)), match.group(2)
    while stack and stack[-1][0] >= indent:
        stack.pop()
    # Keys inside a documented map (resources.requests, a selector) are its default content.
    inside_documented = any(documented for _, _, documented in stack)
    stack.append((indent, key, pending is not None))
    path = [k for _, k, _ in stack]
    node = values
    for part in path:
        node = node[part]
    leaf = not (isinstance(node, dict) and node)
    if inside_documented:
        pending = None
        continue
    if pending is None and leaf:
        undocumented.append(".".join(path))
    if pending is not None:
        kind = {bool: "bool", int: "int", float: "float", str: "string", list: "list",
                dict: "object", type(None): "null"}[type(node)]
        default = json.dumps(node, separators=(",", ":")) if not isinstance(node, dict) or not node else "{...}"
        rows.append(f"| `{'.'.join(path)}` | {kind} | `{default}` | {pending.replace('|', '&#124;')} |")
    pending = None

if undocumented:
    sys.exit("values without a `# --` comment in values.yaml:\n  " + "\n  ".join(undocumented))
table = "\n".join([BEGIN, "| Key | Type | Default | Description |", "|---|---|---|---|", *rows, END])
readme = open(readme_path).read()
if BEGIN not in readme or END not in readme:
    sys.exit(f"{readme_path} lacks the {BEGIN} / {END} markers")
head, rest = readme.split(BEGIN, 1)
_, tail = rest.split(END, 1)
updated = head + table + tail
if mode == "write":
    open(readme_path, "w").write(updated)
    print(f"wrote {len(rows)} values into {readme_path}")
elif updated != readme:
    sys.exit("charts/cloudpacs/README.md's values table is stale: run `infra/helm.sh docs`")
else:
    print(f"README values table current ({len(rows)} values, all documented)")
PY
}

# expect_refusal WHAT MESSAGE HELM_ARGS... — the chart must refuse to render minimal-values.yaml
# with HELM_ARGS, saying MESSAGE; returns 1 (and says why) otherwise.
expect_refusal() {
    local what="$1" message="$2" out
    shift 2
    log "refused: $what"
    if out="$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
        --kube-version "$GOLDEN_KUBE_VERSION" --values "$CI_DIR/minimal-values.yaml" "$@" 2>&1)"; then
        printf 'ERROR: the chart rendered %s (%s)\n' "$what" "$*" >&2
        return 1
    elif ! grep -qF -- "$message" <<<"$out"; then
        printf '%s\n' "$out" | tail -n 5 >&2
        printf 'ERROR: the chart refused %s, but without "%s"\n' "$what" "$message" >&2
        return 1
    fi
}

cmd_lint() {
    install_tools
    local name version failures=0
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    [[ -n "$(ci_names)" ]] || die "no values files in $CI_DIR"
    # The chart ships the alert rules from infra/prometheus; they must be the same file.
    cmp -s "$REPO/infra/prometheus/rules.yml" "$CHART/files/prometheus-rules.yml" \
        || die "charts/cloudpacs/files/prometheus-rules.yml differs from infra/prometheus/rules.yml: run infra/prometheus/check.sh sync"
    for name in $(ci_names); do
        for version in "${KUBE_VERSIONS[@]}"; do
            log "$name: helm lint --strict (Kubernetes $version)"
            "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" \
                --values "$CI_DIR/$name-values.yaml" --kube-version "$version" \
                || { failures=$((failures + 1)); continue; }
            render "$name" "$version" >"$tmp/$name-$version.yaml" \
                || { failures=$((failures + 1)); continue; }
            log "$name: kubernetes-validate --strict -k $version ($(grep -c '^kind:' "$tmp/$name-$version.yaml") resources; CRD kinds are skipped with a warning)"
            "$KV" --strict --quiet -k "$version" "$tmp/$name-$version.yaml" \
                || failures=$((failures + 1))
        done
        log "$name: golden comparison"
        if ! diff -u "$GOLDEN_DIR/$name.yaml" "$tmp/$name-$GOLDEN_KUBE_VERSION.yaml" >"$tmp/$name.diff" 2>&1; then
            head -n 60 "$tmp/$name.diff"
            printf 'ERROR: the render of ci/%s-values.yaml differs from ci/golden/%s.yaml.\n' "$name" "$name" >&2
            printf '       If the change is intended, run: infra/helm.sh update-golden (and review the diff).\n' >&2
            failures=$((failures + 1))
        fi
    done
    log "site registries: the rendered ConfigMaps, read by the gateway's own loader"
    (cd "$REPO" && uv run --frozen python - "$tmp"/*-"$GOLDEN_KUBE_VERSION".yaml <<'PY'
"""Every site-registry ConfigMap the chart renders must load with pacs_gateway.registry."""
import sys
import tempfile
from pathlib import Path

import yaml
from pacs_gateway.registry import load_registry

checked = 0
for render in sys.argv[1:]:
    for doc in yaml.safe_load_all(Path(render).read_text()):
        if doc and doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-site-registry"):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "sites.yaml"
                path.write_text(doc["data"]["sites.yaml"])
                registry = load_registry(path)
            checked += 1
            print(f"  {Path(render).name}: {doc['metadata']['name']} valid ({len(registry.tenants)} tenants)")
if not checked:
    sys.exit("no site registry rendered: a ci/ values file should set one")
PY
    ) || failures=$((failures + 1))
    # The render read as an operator would (tests/chart): every peer the configuration names has
    # an egress rule and nothing else does, the grace period covers the shutdown budget, every
    # rendered variable is read by its service (infra/check_chart_env.py), limits per pod, every
    # Service and NetworkPolicy documented. The same tests run in `make test`.
    log "operator's reading of the renders: uv run pytest tests/chart"
    (cd "$REPO" && uv run --frozen pytest tests/chart -q -p no:cacheprovider) \
        || failures=$((failures + 1))
    # What the chart must refuse to deploy, each with the message that tells the operator why.
    expect_refusal "an empty auth.issuer" "auth.issuer is required" \
        --set auth.issuer= || failures=$((failures + 1))
    expect_refusal "dicom.tlsOnly without DICOM TLS" "dicom.tlsOnly needs components.gateway.dicom.tls.enabled" \
        --set components.gateway.dicom.tlsOnly=true || failures=$((failures + 1))
    expect_refusal "PACS_AUTH_REQUIRED in extraEnv" "must not set PACS_AUTH_REQUIRED" \
        --set-string 'components.indexer.extraEnv[0].name=PACS_AUTH_REQUIRED,components.indexer.extraEnv[0].value=false' \
        || failures=$((failures + 1))
    expect_refusal "auth.trustedServices without uses.auth" "auth.trustedServices needs components.storage.uses.auth" \
        --set 'components.storage.auth.trustedServices[0]=gateway' || failures=$((failures + 1))
    expect_refusal "an unknown auth key" "additional properties 'issuerUrl' not allowed" \
        --set auth.issuerUrl=https://idp.example || failures=$((failures + 1))
    # TLS-only: the gateway of ci/everything has no plaintext DICOM port anywhere.
    log "TLS-only DICOM: no plaintext port in ci/everything's gateway"
    (cd "$REPO" && uv run --frozen python - "$tmp/everything-$GOLDEN_KUBE_VERSION.yaml" <<'PY'
"""ci/everything sets dicom.tlsOnly: the gateway must bind, publish and allow only dicom-tls."""
import sys
from pathlib import Path

import yaml

docs = [d for d in yaml.safe_load_all(Path(sys.argv[1]).read_text()) if d]
gateway = [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gateway"]
ports = {}
for doc in gateway:
    if doc["kind"] == "Deployment":
        ports["container"] = [p["name"] for p in doc["spec"]["template"]["spec"]["containers"][0]["ports"]]
    elif doc["kind"] == "Service" and doc["metadata"]["name"].endswith("-dicom"):
        ports["DICOM Service"] = [p["name"] for p in doc["spec"]["ports"]]
    elif doc["kind"] == "NetworkPolicy":
        ports["NetworkPolicy ingress"] = [p["port"] for rule in doc["spec"]["ingress"] for p in rule.get("ports", [])]
    elif doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-config"):
        config = doc["data"]
problems = [f"{where} has the plaintext port 'dicom'" for where, names in ports.items() if "dicom" in names]
problems += [f"{where} lacks 'dicom-tls'" for where, names in ports.items() if "dicom-tls" not in names]
if len(ports) != 3:
    problems.append(f"expected a container, a DICOM Service and a NetworkPolicy, found {sorted(ports)}")
if config.get("PACS_GATEWAY_TLS_ONLY") != "true" or "PACS_GATEWAY_DICOM_PORT" in config:
    problems.append("the ConfigMap lacks PACS_GATEWAY_TLS_ONLY=true or still sets PACS_GATEWAY_DICOM_PORT")
for problem in problems:
    print(f"ERROR: gateway: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print("  gateway: only dicom-tls in the container, the DICOM Service and the NetworkPolicy")
PY
    ) || failures=$((failures + 1))
    log "values documentation"
    values_doc check || failures=$((failures + 1))
    ((failures == 0)) || die "$failures chart check(s) failed"
    log "chart OK: $(ci_names | wc -l) values files x ${#KUBE_VERSIONS[@]} Kubernetes versions"
}

cmd_update_golden() {
    install_tools
    local name
    mkdir -p "$GOLDEN_DIR"
    rm -f "$GOLDEN_DIR"/*.yaml
    for name in $(ci_names); do
        render "$name" "$GOLDEN_KUBE_VERSION" >"$GOLDEN_DIR/$name.yaml"
        log "wrote ci/golden/$name.yaml"
    done
}

main() {
    local cmd="${1:-lint}"
    shift || true
    case "$cmd" in
        lint) cmd_lint ;;
        template)
            install_tools
            [[ $# -eq 1 ]] || die "usage: infra/helm.sh template NAME (one of: $(ci_names | tr '\n' ' '))"
            render "$1" "$GOLDEN_KUBE_VERSION"
            ;;
        update-golden) cmd_update_golden ;;
        docs) install_tools && values_doc write ;;
        install) install_tools ;;
        -h | --help | help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' ;;
        *) die "unknown command '$cmd' (lint, template, update-golden, docs, install)" ;;
    esac
}

main "$@"
