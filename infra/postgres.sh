#!/usr/bin/env bash
# infra/postgres.sh — project-local PostgreSQL cluster (Debian postgresql package).
#
#   infra/postgres.sh start|stop|status|restart
#
# Listens on 127.0.0.1:${PACS_PG_PORT:-15432} only; unix socket in .cache/run/postgres;
# trust auth, superuser `postgres`, database `cloudpacs` created if missing.
# Data in .cache/run/postgres/data (kept across restarts; fsync=off — test use only),
# server log .cache/run/postgres/postgres.log. Never touches any other cluster
# (e.g. the system one on 5432). As root, initdb/pg_ctl run as the `postgres`
# OS user (runuser); as any other user they run as that user.
# Binaries: $PACS_PG_BIN, else /usr/lib/postgresql/<PG_VERSION of the data dir>/bin,
# else the newest /usr/lib/postgresql/*/bin, else pg_ctl on PATH.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PDIR="$RUN/postgres"
# PostgreSQL refuses to run as root, so its files belong to the OS user 'postgres', which must
# be able to walk into the repository. A clone under a private folder (mktemp -d is 0700) does
# not allow that: keep the cluster in a folder of its own under /var/tmp, one per checkout.
if [[ $EUID -eq 0 ]] && id postgres >/dev/null 2>&1 \
    && ! runuser -u postgres -- test -x "$REPO" 2>/dev/null; then
    PDIR="/var/tmp/cloudpacs-postgres-$(printf '%s' "$REPO" | sha256sum | cut -c1-12)"
fi
DATA="$PDIR/data"
LOGFILE="$PDIR/postgres.log"
PG_USER=postgres
STOP_TIMEOUT=30
START_TIMEOUT="${PACS_PG_START_TIMEOUT:-60}"

find_pgbin() {
    if [[ -n "${PACS_PG_BIN:-}" ]]; then
        echo "$PACS_PG_BIN"; return
    fi
    if [[ -f "$DATA/PG_VERSION" && -x "/usr/lib/postgresql/$(cat "$DATA/PG_VERSION")/bin/pg_ctl" ]]; then
        echo "/usr/lib/postgresql/$(cat "$DATA/PG_VERSION")/bin"; return
    fi
    local d
    d="$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n1 || true)"
    if [[ -n "$d" && -x "$d/pg_ctl" ]]; then
        echo "$d"; return
    fi
    if command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"; return
    fi
    die "postgres: no PostgreSQL server binaries found — run infra/bootstrap.sh (apt-get install postgresql)"
}

# as_pg CMD... — run CMD as the postgres OS user when we are root.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

# Postmaster pid from postmaster.pid, if that process is alive and is a postgres.
running_pid() {
    local pid
    [[ -f "$DATA/postmaster.pid" ]] || return 1
    pid="$(head -n1 "$DATA/postmaster.pid" 2>/dev/null | tr -dc '0-9')"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$DATA" || return 1
    echo "$pid"
}

psql_cmd() {
    "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PACS_PG_PORT" -U postgres "$@"
}

cmd_start() {
    local pid t0
    t0="$(now)"
    svc_lock "$PDIR"
    PGBIN="$(find_pgbin)"
    if pid="$(running_pid)"; then
        log "postgres: already running (pid $pid) on 127.0.0.1:$PACS_PG_PORT"
        ensure_db
        return 0
    fi
    ensure_port_free "$PACS_PG_PORT" postgres PACS_PG_PORT
    mkdir -p "$PDIR"
    if [[ $EUID -eq 0 ]]; then
        id "$PG_USER" >/dev/null 2>&1 || die "postgres: OS user '$PG_USER' missing (apt-get install postgresql creates it)"
        chown "$PG_USER:" "$PDIR"
        as_pg test -w "$PDIR" \
            || die "postgres: user '$PG_USER' cannot reach $PDIR (a parent directory is not world-executable?); move the repo or chmod o+x its parents"
    fi
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        log "postgres: initdb into $DATA ($("$PGBIN/postgres" --version))"
        rm -rf "$DATA"
        as_pg "$PGBIN/initdb" -D "$DATA" -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync \
            >"$PDIR/initdb.log" 2>&1 || fail_with_log postgres "$PDIR/initdb.log" "initdb failed"
    fi
    # A postmaster that was just SIGKILLed can linger a moment (zombie / exiting
    # backends still attached); postgres refuses to start until it is gone.
    local old i
    old="$(head -n1 "$DATA/postmaster.pid" 2>/dev/null | tr -dc '0-9' || true)"
    if [[ -n "$old" ]]; then
        for ((i = 0; i < 100; i++)); do
            [[ -e "/proc/$old" ]] || break
            sleep 0.1
        done
    fi
    log "postgres: starting on 127.0.0.1:$PACS_PG_PORT"
    # pg_ctl daemonises the postmaster (setsid) itself; 8>&-: keep our lock fd out of it.
    # fsync and full_page_writes off: what they skip is lost only when the machine crashes,
    # which a test run does not survive anyway. synchronous_commit=off is a tuning a real
    # server may have too; the services raise it per session (pacs_common.sql), and the
    # chaos suite's kill -9 of PostgreSQL checks that they do.
    if ! as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -t "$START_TIMEOUT" -s \
        -o "-p $PACS_PG_PORT -k $PDIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start 8>&-; then
        fail_with_log postgres "$LOGFILE" "pg_ctl start failed"
    fi
    ensure_db
    log "postgres: ready (pid $(running_pid || echo '?')) in $(elapsed "$t0")"
}

ensure_db() {
    if [[ "$(psql_cmd -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PACS_PG_DB'")" != 1 ]]; then
        log "postgres: creating database $PACS_PG_DB"
        psql_cmd -d postgres -c "CREATE DATABASE \"$PACS_PG_DB\""
    fi
}

cmd_stop() {
    local pid t0
    t0="$(now)"
    svc_lock "$PDIR"
    if ! pid="$(running_pid)"; then
        log "postgres: not running"
        return 0
    fi
    PGBIN="$(find_pgbin)"
    log "postgres: stopping (pid $pid)"
    if ! as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t "$STOP_TIMEOUT" -s stop; then
        warn "postgres: pg_ctl stop failed or timed out; killing pid $pid"
        stop_pid "$pid" postgres 5
    fi
    log "postgres: stopped in $(elapsed "$t0")"
}

cmd_status() {
    service_status postgres "127.0.0.1:$PACS_PG_PORT" "data $DATA" "$LOGFILE" port_open "$PACS_PG_PORT"
}

service_main "$@"
