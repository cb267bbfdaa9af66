#!/usr/bin/env bash
# infra/hydra.sh — local OpenID provider: ory/hydra v2.3.0 from .cache/bin (infra/bootstrap.sh).
#
#   infra/hydra.sh start|stop|status|restart
#
# Issuer (public) http://127.0.0.1:${PACS_HYDRA_PUBLIC_PORT:-14444}, admin API
# http://127.0.0.1:${PACS_HYDRA_ADMIN_PORT:-14445}, both on loopback only. State lives in the
# database ${PACS_HYDRA_DB:-hydra} on the project's PostgreSQL (infra/postgres.sh must be
# running; this build of hydra has no SQLite), created and migrated on start. Access tokens
# are JWTs (RS256, keys at <issuer>/.well-known/jwks.json).
#
# On every start the OAuth clients cloudpacs needs are provisioned (idempotently, by
# infra/hydra_clients.py): client-credentials clients whose allowed scopes name their tenant
# and roles (see that file for why scopes). Their ids and secrets are kept in
# .cache/run/hydra/clients.env (mode 0600), which infra/up.sh copies into infra.env.
# The system secret (encrypts hydra's keys at rest) is generated once into
# .cache/run/hydra/secrets-system. Log: .cache/run/hydra/hydra.log. Pid: hydra.pid.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HDIR="$RUN/hydra"
PIDFILE="$HDIR/hydra.pid"
LOGFILE="$HDIR/hydra.log"
SECRET_FILE="$HDIR/secrets-system"
CLIENTS_ENV="$HDIR/clients.env"
HYDRA="$BIN_DIR/hydra"
START_TIMEOUT="${PACS_HYDRA_START_TIMEOUT:-60}"
ISSUER="http://127.0.0.1:$PACS_HYDRA_PUBLIC_PORT"
ADMIN="http://127.0.0.1:$PACS_HYDRA_ADMIN_PORT"
DSN="postgres://postgres@127.0.0.1:$PACS_PG_PORT/$PACS_HYDRA_DB?sslmode=disable"

# (matched by a path-independent pattern: worktrees sharing .cache see the same server)
running_pid() { pid_alive "$PIDFILE" "bin/hydra serve all"; }

# ready URL — true when hydra's health endpoint at URL answers 200.
ready() { curl -fsS -o /dev/null --max-time 2 "$1/health/ready" 2>/dev/null; }

psql_cmd() {
    local psql
    psql="$(compgen -G '/usr/lib/postgresql/*/bin/psql' | sort -V | tail -n1 || true)"
    [[ -n "$psql" ]] || psql="$(command -v psql || true)"
    [[ -n "$psql" ]] || die "hydra: psql not found (apt-get install postgresql-client)"
    "$psql" -X -q -h 127.0.0.1 -p "$PACS_PG_PORT" -U postgres "$@"
}

ensure_database() {
    port_open "$PACS_PG_PORT" \
        || die "hydra: PostgreSQL is not answering on 127.0.0.1:$PACS_PG_PORT — start it first (infra/postgres.sh start)"
    if [[ "$(psql_cmd -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PACS_HYDRA_DB'")" != 1 ]]; then
        log "hydra: creating database $PACS_HYDRA_DB"
        psql_cmd -d postgres -c "CREATE DATABASE \"$PACS_HYDRA_DB\""
    fi
    log "hydra: migrating database $PACS_HYDRA_DB"
    DSN="$DSN" "$HYDRA" migrate sql up -e --yes >>"$LOGFILE" 2>&1 \
        || fail_with_log hydra "$LOGFILE" "hydra migrate sql failed"
}

cmd_start() {
    local pid t0
    t0="$(now)"
    svc_lock "$HDIR"
    command -v curl >/dev/null 2>&1 || die "hydra: curl is required (apt-get install curl)"
    if pid="$(running_pid)"; then
        log "hydra: already running (pid $pid), issuer $ISSUER"
        provision
        return 0
    fi
    rm -f "$PIDFILE"
    [[ -x "$HYDRA" ]] || die "hydra: $HYDRA missing — run infra/bootstrap.sh first"
    ensure_port_free "$PACS_HYDRA_PUBLIC_PORT" hydra PACS_HYDRA_PUBLIC_PORT
    ensure_port_free "$PACS_HYDRA_ADMIN_PORT" hydra PACS_HYDRA_ADMIN_PORT
    mkdir -p "$HDIR"
    if [[ ! -s "$SECRET_FILE" ]]; then
        (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '\n=+/' >"$SECRET_FILE")
    fi
    rotate_log "$LOGFILE"
    ensure_database
    log "hydra: starting; issuer $ISSUER, admin $ADMIN"
    # Configuration via env, not argv (keeps the secret out of `ps`). --dev allows an http
    # issuer on loopback. Client-credentials tokens carry every scope the client is allowed
    # (default_grant_allowed_scope), so a client's token always names its tenant and roles.
    DSN="$DSN" SECRETS_SYSTEM="$(cat "$SECRET_FILE")" URLS_SELF_ISSUER="$ISSUER" \
        SERVE_PUBLIC_HOST=127.0.0.1 SERVE_PUBLIC_PORT="$PACS_HYDRA_PUBLIC_PORT" \
        SERVE_ADMIN_HOST=127.0.0.1 SERVE_ADMIN_PORT="$PACS_HYDRA_ADMIN_PORT" \
        STRATEGIES_ACCESS_TOKEN=jwt OAUTH2_CLIENT_CREDENTIALS_DEFAULT_GRANT_ALLOWED_SCOPE=true \
        LOG_LEVEL=warn \
        setsid "$HYDRA" serve all --dev --sqa-opt-out >>"$LOGFILE" 2>&1 </dev/null 8>&- &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"

    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            fail_with_log hydra "$LOGFILE" "hydra exited during startup"
        fi
        if ready "$ADMIN" && ready "$ISSUER"; then
            log "hydra: ready (pid $pid) in $(elapsed "$t0")"
            provision
            return 0
        fi
        sleep 0.2
    done
    fail_with_log hydra "$LOGFILE" "no answer on $ISSUER/health/ready after ${START_TIMEOUT}s"
}

# provision — create or update the OAuth clients, keeping their secrets in clients.env.
provision() {
    (umask 077 && python3 "$INFRA_DIR/hydra_clients.py" --admin "$ADMIN" \
        --audience "$PACS_AUTH_AUDIENCE" --env-file "$CLIENTS_ENV") \
        || die "hydra: provisioning the OAuth clients failed"
    log "hydra: clients provisioned ($CLIENTS_ENV)"
}

cmd_stop() {
    stop_service hydra "$HDIR" "$PIDFILE"
}

cmd_status() {
    service_status hydra "$ISSUER (admin $ADMIN)" "database $PACS_HYDRA_DB" "$LOGFILE" ready "$ADMIN"
}

service_main "$@"
