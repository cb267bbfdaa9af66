#!/usr/bin/env bash
# infra/dashboards/generate.sh — build the Grafana dashboards into charts/cloudpacs/dashboards/.
#
#   infra/dashboards/generate.sh         regenerate the JSON files
#   infra/dashboards/generate.sh check   fail if they are stale, or if a dashboard or alert
#                                        queries a metric that pacs_common.metrics does not define
#
# The generator (boards.py, panels.py) uses Grafana's grafana-foundation-sdk, installed with uv
# into its own virtualenv .cache/venv-dashboards; the metric-name check runs in the project
# environment (`uv run`), because it imports pacs_common.metrics.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="$REPO/.cache/venv-dashboards"
OUT="$REPO/charts/cloudpacs/dashboards"
# The SDK's versions are "<build timestamp>!<Grafana version>": this build targets Grafana 11.6.
SDK_VERSION="1769699379!11.6.0"

die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

if [[ "$(cat "$VENV/.sdk-version" 2>/dev/null)" != "$SDK_VERSION" ]]; then
    command -v uv >/dev/null || die "uv is needed to install grafana-foundation-sdk"
    printf '==> installing grafana-foundation-sdk %s into %s\n' "$SDK_VERSION" "$VENV"
    uv venv --quiet --allow-existing --python 3.11 "$VENV"
    uv pip install --quiet --python "$VENV/bin/python" "grafana-foundation-sdk==$SDK_VERSION"
    printf '%s\n' "$SDK_VERSION" >"$VENV/.sdk-version"
fi

case "${1:-generate}" in
    generate)
        "$VENV/bin/python" "$HERE/generate.py" --out "$OUT"
        ;;
    check)
        "$VENV/bin/python" "$HERE/generate.py" --out "$OUT" --check
        (cd "$REPO" && uv run --frozen python "$HERE/check_metric_names.py")
        ;;
    *) die "unknown command '$1' (generate, check)" ;;
esac
