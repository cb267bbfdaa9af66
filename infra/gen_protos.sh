#!/usr/bin/env bash
# Generates the Python protobuf/gRPC package `pacs` (with .pyi stubs from mypy-protobuf) from
# protos/ into services/common/src/pacs. `make proto` runs it; CI runs it and fails on a diff.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$REPO/services/common/src"
rm -rf "$OUT/pacs"
mkdir -p "$OUT"
cd "$REPO/protos"
mapfile -t PROTOS < <(find pacs -name '*.proto' | sort)
python -m grpc_tools.protoc -I . \
  --python_out="$OUT" --mypy_out="$OUT" \
  --grpc_python_out="$OUT" --mypy_grpc_out="$OUT" \
  "${PROTOS[@]}"
# Make every generated directory a regular package so mypy and hatch see it.
find "$OUT/pacs" -type d -exec sh -c 'f="$1/__init__.py"; [ -e "$f" ] || : > "$f"' _ {} \;
printf 'Generated %d proto files into %s\n' "${#PROTOS[@]}" "$OUT/pacs"
