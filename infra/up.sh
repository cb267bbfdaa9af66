#!/usr/bin/env bash
# infra/up.sh — bring up the whole local cloudpacs infrastructure:
# bootstrap (idempotent), then PostgreSQL, S3 (versitygw) and Kafka, then write
# .cache/run/infra.env (KEY=value lines, for `set -a; . .cache/run/infra.env`)
# and print the endpoints. Safe to re-run: running services are left alone.
# Usage: infra/up.sh            (ports/keys: see infra/README.md)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t0="$(now)"
"$INFRA_DIR/bootstrap.sh"
"$INFRA_DIR/postgres.sh" start
"$INFRA_DIR/s3.sh" start
"$INFRA_DIR/kafka.sh" start

mkdir -p "$RUN"
ENV_FILE="$RUN/infra.env"
cat >"$ENV_FILE.tmp" <<ENV
PACS_KAFKA_BOOTSTRAP=127.0.0.1:${PACS_KAFKA_PORT}
PACS_S3_ENDPOINT=http://127.0.0.1:${PACS_S3_PORT}
PACS_S3_ACCESS_KEY=${PACS_S3_ACCESS_KEY}
PACS_S3_SECRET_KEY=${PACS_S3_SECRET_KEY}
PACS_S3_REGION=${PACS_S3_REGION}
PACS_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:${PACS_PG_PORT}/${PACS_PG_DB}
ENV
mv -f "$ENV_FILE.tmp" "$ENV_FILE"

cat <<TABLE

  service    endpoint                         logs
  ---------  -------------------------------  -----------------------------------
  kafka      127.0.0.1:${PACS_KAFKA_PORT} (ctrl ${PACS_KAFKA_CONTROLLER_PORT})       .cache/run/kafka/kafka.log
  s3         http://127.0.0.1:${PACS_S3_PORT}           .cache/run/s3/s3.log
  postgres   127.0.0.1:${PACS_PG_PORT} db ${PACS_PG_DB}      .cache/run/postgres/postgres.log

  S3 credentials: ${PACS_S3_ACCESS_KEY} / ${PACS_S3_SECRET_KEY} (region ${PACS_S3_REGION})
  env file: .cache/run/infra.env   (load with: set -a; . .cache/run/infra.env; set +a)

TABLE
log "infra up in $(elapsed "$t0")"
