#!/usr/bin/env bash
# infra/prometheus/check.sh — check the cloudpacs alert rules.
#
#   infra/prometheus/check.sh        promtool check rules + promtool test rules (rules_test.yml),
#                                    check the chart's copy is the same file, and check the
#                                    PrometheusRule the chart renders with promtool too
#   infra/prometheus/check.sh sync   copy rules.yml into the chart (charts/cloudpacs/files/)
#
# promtool comes from Debian's `prometheus` package (apt-get install prometheus).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
RULES="$HERE/rules.yml"
CHART_RULES="$REPO/charts/cloudpacs/files/prometheus-rules.yml"

log() { printf '==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

case "${1:-check}" in
    sync)
        cp "$RULES" "$CHART_RULES"
        log "copied rules.yml to ${CHART_RULES#"$REPO"/}"
        exit 0
        ;;
    check) ;;
    *) die "unknown command '$1' (check, sync)" ;;
esac

command -v promtool >/dev/null || die "promtool not found: apt-get install prometheus"
log "promtool check rules"
promtool check rules "$RULES"
log "promtool test rules"
(cd "$HERE" && promtool test rules rules_test.yml)

cmp -s "$RULES" "$CHART_RULES" \
    || die "${CHART_RULES#"$REPO"/} differs from infra/prometheus/rules.yml: run infra/prometheus/check.sh sync"

# What the chart actually ships: the PrometheusRule's spec, rendered with every switch on.
log "promtool check rules on the chart's rendered PrometheusRule"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$REPO/infra/helm.sh" template everything >"$tmp/render.yaml"
"$REPO/.cache/venv-helm/bin/python" - "$tmp/render.yaml" "$tmp/chart-rules.yml" <<'PY'
import sys
import yaml

rules = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "PrometheusRule"]
if len(rules) != 1:
    sys.exit(f"expected one PrometheusRule in the render, found {len(rules)}")
yaml.safe_dump(rules[0]["spec"], open(sys.argv[2], "w"), sort_keys=False)
PY
promtool check rules "$tmp/chart-rules.yml"
log "rules OK"
