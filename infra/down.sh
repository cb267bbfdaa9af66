#!/usr/bin/env bash
# infra/down.sh — stop hydra, Kafka, S3 (versitygw) and PostgreSQL started by infra/up.sh.
# Data under .cache/run is kept unless --purge is given, which deletes .cache/run
# entirely (Kafka topics, S3 buckets, the PostgreSQL cluster, logs, infra.env).
# Downloaded/built artefacts (.cache/kafka-libs, .cache/bin) are never deleted.
# Usage: infra/down.sh [--purge]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

t0="$(now)"
# hydra first: it keeps its state in PostgreSQL.
"$INFRA_DIR/hydra.sh" stop || die "hydra failed to stop; not stopping the rest"
# Stop the three in parallel (Kafka's controlled shutdown and versitygw's
# graceful stop take ~2-3 s each); print each one's output in a fixed order.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pids=()
for svc in kafka s3 postgres; do
    "$INFRA_DIR/$svc.sh" stop >"$tmp/$svc" 2>&1 &
    pids+=($!)
done
rc=0
i=0
for svc in kafka s3 postgres; do
    wait "${pids[$i]}" || rc=1
    cat "$tmp/$svc"
    i=$((i + 1))
done
((rc == 0)) || die "some service failed to stop; not purging (check 'infra/<svc>.sh status')"

if ((purge)); then
    log "purging $RUN"
    rm -rf "$RUN"
fi
log "infra down in $(elapsed "$t0")"
