#!/usr/bin/env bash
# infra/up.sh — bring up the whole local cloudpacs infrastructure:
# bootstrap (idempotent), the local CA and certificates (.cache/pki, pacs_common.pki), then
# PostgreSQL, S3 (versitygw) and Kafka (SASL_SSL), then hydra (the OpenID provider, which
# keeps its state in PostgreSQL) with its OAuth clients, then write .cache/run/infra.env
# (KEY=value lines, for `set -a; . .cache/run/infra.env`; mode 600: it holds the Kafka
# password and the OAuth client secrets) and print the endpoints. Safe to re-run: running
# services are left alone.
# Usage: infra/up.sh            (ports/keys: see infra/README.md)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t0="$(now)"
"$INFRA_DIR/bootstrap.sh"
# Certificates first: the Kafka broker serves TLS with .cache/pki/kafka.{crt,key}, and the
# services' mTLS reads PACS_TLS_DIR. Idempotent; renews certificates close to expiry.
log "pki: local CA and certificates in $PKI_DIR"
ensure_pki
# Kafka (the slow one: 2 JVM starts) comes up in the background while PostgreSQL
# and S3 start; its output is shown once it is done.
mkdir -p "$RUN"
kafka_out="$(mktemp)"
trap 'rm -f "$kafka_out"' EXIT
"$INFRA_DIR/kafka.sh" start >"$kafka_out" 2>&1 &
kafka_job=$!
rc=0
"$INFRA_DIR/postgres.sh" start || rc=1
"$INFRA_DIR/s3.sh" start || rc=1
if ((rc == 0)); then
    "$INFRA_DIR/hydra.sh" start || rc=1
fi
wait "$kafka_job" || rc=1
cat "$kafka_out"
((rc == 0)) || die "infra up failed (see messages above; 'infra/down.sh' stops whatever did start)"

mkdir -p "$RUN"
ENV_FILE="$RUN/infra.env"
# PACS_KAFKA_SSL_CA_FILE is not written: KafkaSettings trusts PACS_TLS_DIR/ca.crt by default.
(umask 077 && cat >"$ENV_FILE.tmp" <<ENV
PACS_TLS_DIR=${PKI_DIR}
PACS_KAFKA_BOOTSTRAP=127.0.0.1:${PACS_KAFKA_PORT}
PACS_KAFKA_SECURITY_PROTOCOL=SASL_SSL
PACS_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
PACS_KAFKA_SASL_USERNAME=${PACS_KAFKA_USER}
PACS_KAFKA_SASL_PASSWORD=$(kafka_password "$PACS_KAFKA_USER")
PACS_S3_ENDPOINT=http://127.0.0.1:${PACS_S3_PORT}
PACS_S3_ACCESS_KEY=${PACS_S3_ACCESS_KEY}
PACS_S3_SECRET_KEY=${PACS_S3_SECRET_KEY}
PACS_S3_REGION=${PACS_S3_REGION}
PACS_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:${PACS_PG_PORT}/${PACS_PG_DB}
PACS_AUTH_ISSUER=http://127.0.0.1:${PACS_HYDRA_PUBLIC_PORT}
PACS_AUTH_JWKS_URL=http://127.0.0.1:${PACS_HYDRA_PUBLIC_PORT}/.well-known/jwks.json
PACS_AUTH_AUDIENCE=${PACS_AUTH_AUDIENCE}
PACS_CLI_TOKEN_URL=http://127.0.0.1:${PACS_HYDRA_PUBLIC_PORT}/oauth2/token
PACS_HYDRA_ADMIN_URL=http://127.0.0.1:${PACS_HYDRA_ADMIN_PORT}
ENV
)
# The provisioned client ids and secrets (PACS_CLI_CLIENT_ID/SECRET, PACS_APP_CLIENT_ID/SECRET).
cat "$RUN/hydra/clients.env" >>"$ENV_FILE.tmp"
chmod 600 "$ENV_FILE.tmp"
mv -f "$ENV_FILE.tmp" "$ENV_FILE"

row() { printf '  %-9s  %-42s  %s\n' "$@"; }
echo
row service endpoint log
row ------- -------- ---
row kafka "127.0.0.1:${PACS_KAFKA_PORT} SASL_SSL (controller ${PACS_KAFKA_CONTROLLER_PORT})" .cache/run/kafka/kafka.log
row s3 "http://127.0.0.1:${PACS_S3_PORT} (${PACS_S3_REGION})" .cache/run/s3/s3.log
row postgres "127.0.0.1:${PACS_PG_PORT}/${PACS_PG_DB} (user postgres)" .cache/run/postgres/postgres.log
row hydra "http://127.0.0.1:${PACS_HYDRA_PUBLIC_PORT} (admin ${PACS_HYDRA_ADMIN_PORT})" .cache/run/hydra/hydra.log
echo
echo "  S3 credentials: ${PACS_S3_ACCESS_KEY} / ${PACS_S3_SECRET_KEY}"
echo "  Kafka: SASL_SSL, SCRAM-SHA-512 user ${PACS_KAFKA_USER} (password in the env file), CA ${PKI_DIR}/ca.crt"
echo "  env file: .cache/run/infra.env   (load: set -a; . .cache/run/infra.env; set +a)"
echo
log "infra up in $(elapsed "$t0")"
