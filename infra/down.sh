#!/usr/bin/env bash
# infra/down.sh — stop Kafka, S3 (versitygw) and PostgreSQL started by infra/up.sh.
# Data under .cache/run is kept unless --purge is given, which deletes .cache/run
# entirely (Kafka topics, S3 buckets, the PostgreSQL cluster, logs, infra.env).
# Downloaded/built artefacts (.cache/kafka-libs, .cache/bin) are never deleted.
# Usage: infra/down.sh [--purge]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

t0="$(now)"
rc=0
"$INFRA_DIR/kafka.sh" stop || rc=1
"$INFRA_DIR/s3.sh" stop || rc=1
"$INFRA_DIR/postgres.sh" stop || rc=1
((rc == 0)) || die "some service failed to stop; not purging (check 'infra/<svc>.sh status')"

if ((purge)); then
    log "purging $RUN"
    rm -rf "$RUN"
fi
log "infra down in $(elapsed "$t0")"
