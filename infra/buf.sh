#!/usr/bin/env bash
# buf lint (STANDARD + COMMENTS) and the breaking-change check of protos/ against main.
# Builds buf from the Go module proxy into .cache/bin on first use (~6 min on 2 cores).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BUF_VERSION="v1.75.0"
BUF="$REPO/.cache/bin/buf"
if [[ ! -x "$BUF" ]]; then
    command -v go >/dev/null || { echo "ERROR: Go is needed to build buf; install Go 1.25+" >&2; exit 1; }
    echo "==> building buf $BUF_VERSION (first run only, several minutes)"
    GOBIN="$REPO/.cache/bin" go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
fi
cd "$REPO/protos"
"$BUF" lint
echo "buf lint: ok"
if git -C "$REPO" rev-parse --verify -q main >/dev/null; then
    "$BUF" breaking --against "$REPO/.git#branch=main,subdir=protos"
    echo "buf breaking (against main): ok"
fi
