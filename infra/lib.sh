# infra/lib.sh — shared helpers for the cloudpacs local-infrastructure scripts.
#
# Sourced (not executed) by infra/*.sh. Defines REPO, the .cache layout, ports,
# logging helpers, pid-file/process helpers and port probes. Bash only; no
# dependency beyond coreutils/util-linux.
# shellcheck shell=bash disable=SC2034  # variables are used by the sourcing scripts

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$INFRA_DIR/.." && pwd)"
CACHE="$REPO/.cache"
RUN="$CACHE/run"
BIN_DIR="$CACHE/bin"
KAFKA_LIBS="$CACHE/kafka-libs"
# The local CA and one certificate per identity (pacs_common.pki); outside $RUN, so it
# survives `down.sh --purge` and clients keep trusting the same CA.
PKI_DIR="$CACHE/pki"
PKI_IDENTITIES=(kafka gateway storage indexer cli transcoder deid audit dicomweb hl7 router)

# Endpoints (env-overridable).
PACS_KAFKA_PORT="${PACS_KAFKA_PORT:-19092}"
PACS_KAFKA_CONTROLLER_PORT="${PACS_KAFKA_CONTROLLER_PORT:-19093}"
# SCRAM-SHA-512 users of the local broker: the services' user and the broker's own
# (inter-broker) user. Their passwords are generated once into .cache/run/kafka/secrets/
# (see kafka.sh) rather than fixed here: the ports are reachable by every user of a shared
# machine, and a password printed in the repository protects nothing.
PACS_KAFKA_USER="${PACS_KAFKA_USER:-pacs}"
PACS_KAFKA_BROKER_USER="broker"
PACS_S3_PORT="${PACS_S3_PORT:-17070}"
PACS_S3_ACCESS_KEY="${PACS_S3_ACCESS_KEY:-cloudpacs}"
PACS_S3_SECRET_KEY="${PACS_S3_SECRET_KEY:-cloudpacs-secret-key}"
PACS_S3_REGION="${PACS_S3_REGION:-us-east-1}"
PACS_PG_PORT="${PACS_PG_PORT:-15432}"
PACS_PG_DB="${PACS_PG_DB:-cloudpacs}"
PACS_HYDRA_PUBLIC_PORT="${PACS_HYDRA_PUBLIC_PORT:-14444}"
PACS_HYDRA_ADMIN_PORT="${PACS_HYDRA_ADMIN_PORT:-14445}"
PACS_HYDRA_DB="${PACS_HYDRA_DB:-hydra}"
# The audience every cloudpacs API expects in an access token (PACS_AUTH_AUDIENCE).
PACS_AUTH_AUDIENCE="${PACS_AUTH_AUDIENCE:-cloudpacs}"

VERSITYGW_VERSION="v1.7.0"
HYDRA_VERSION="v2.3.0"

log()  { printf '==> %s\n' "$*"; }
warn() { printf 'WARN: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Fractional wall-clock seconds since the epoch, and elapsed-time formatting.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# ensure_pki — the local CA and the certificates of PKI_IDENTITIES in PKI_DIR (idempotent:
# only missing or expiring certificates are (re)issued).
ensure_pki() {
    (cd "$REPO" && uv run --frozen python -m pacs_common.pki "$PKI_DIR" "${PKI_IDENTITIES[@]}") \
        || die "pki: could not create the local CA and certificates in $PKI_DIR"
}

# kafka_password USER — the generated SCRAM password of a local broker user (created once,
# mode 600, in .cache/run/kafka/secrets/), on stdout.
kafka_password() {
    local dir="$RUN/kafka/secrets" file
    file="$dir/$1.password"
    if [[ ! -s "$file" ]]; then
        mkdir -p "$dir"
        chmod 700 "$dir"
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$file.tmp")
        mv -f "$file.tmp" "$file"
    fi
    cat "$file"
}

# port_open PORT — true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_alive PIDFILE PATTERN — prints the pid and returns 0 when the pid in PIDFILE
# is alive and its command line contains PATTERN (guards against pid reuse).
pid_alive() {
    local pidfile="$1" pattern="$2" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(head -n1 "$pidfile" | tr -dc '0-9')"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 1
    printf '%s\n' "$pid"
}

# stop_pid PID NAME [TIMEOUT] — SIGTERM, wait up to TIMEOUT s (default 30), then SIGKILL.
stop_pid() {
    local pid="$1" name="$2" timeout="${3:-30}" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    warn "$name (pid $pid) still alive after ${timeout}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    die "$name (pid $pid) survived SIGKILL"
}

# rotate_log FILE — keep one previous log as FILE.1 so a new start gets a clean log.
rotate_log() {
    [[ -e "$1" ]] && mv -f "$1" "$1.1"
    : >"$1"
}

# fail_with_log NAME LOGFILE MESSAGE — print the log tail and exit 1.
fail_with_log() {
    local name="$1" logfile="$2" msg="$3"
    printf 'ERROR: %s: %s\n' "$name" "$msg" >&2
    if [[ -f "$logfile" ]]; then
        printf -- '----- last 40 lines of %s -----\n' "$logfile" >&2
        tail -n 40 "$logfile" >&2
        printf -- '-----\n' >&2
    fi
    exit 1
}

# port_owner PORT — best-effort description of who listens on PORT.
port_owner() {
    if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "sport = :$1" 2>/dev/null | head -n1
    fi
}

# ensure_port_free PORT NAME ENVVAR — die if some other process already listens on PORT.
ensure_port_free() {
    if port_open "$1"; then
        die "$2: port 127.0.0.1:$1 is already in use by another process ($(port_owner "$1")); stop it or set $3"
    fi
}

# svc_lock DIR — serialise start/stop of one service across concurrent callers
# (flock on DIR/.lock held via fd 8 until the script exits). Daemons launched
# while holding it must be started with `8>&-` so they do not inherit the lock.
svc_lock() {
    mkdir -p "$1"
    exec 8>"$1/.lock"
    flock -w 150 8 || die "timed out waiting for $1/.lock (another start/stop running?)"
}

# The functions below serve the start/stop/status scripts (kafka.sh, s3.sh, postgres.sh).
# Each of those defines running_pid (prints the pid of its running server, or fails),
# cmd_start, cmd_stop and cmd_status.

# stop_service NAME DIR PIDFILE — stop the server running_pid finds (SIGTERM, then SIGKILL
# after 30 s) under DIR's start/stop lock, and remove its pid file.
stop_service() {
    local name="$1" dir="$2" pidfile="$3" pid t0
    t0="$(now)"
    svc_lock "$dir"
    if ! pid="$(running_pid)"; then
        rm -f "$pidfile"
        log "$name: not running"
        return 0
    fi
    log "$name: stopping (pid $pid)"
    stop_pid "$pid" "$name" 30
    rm -f "$pidfile"
    log "$name: stopped in $(elapsed "$t0")"
}

# service_status NAME ENDPOINT DETAIL LOGFILE PROBE... — print one status line: running and
# answering PROBE (a command), running but not answering, or stopped (then return 3).
service_status() {
    local name="$1" endpoint="$2" detail="$3" logfile="$4" pid
    shift 4
    if pid="$(running_pid)"; then
        if "$@"; then
            echo "$name: running (pid $pid) on $endpoint, $detail"
        else
            echo "$name: process running (pid $pid) but $endpoint is not answering; see $logfile"
        fi
        return 0
    fi
    echo "$name: stopped"
    return 3
}

# service_main ARG — run the script's cmd_start/cmd_stop/cmd_status for start|stop|status|restart.
service_main() {
    case "${1:-}" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        restart) cmd_stop; cmd_start ;;
        *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
    esac
}
