#!/usr/bin/env bash
# infra/s3.sh — local S3 server: versitygw (posix backend) from .cache/bin.
#
#   infra/s3.sh start|stop|status|restart
#
# Endpoint http://127.0.0.1:${PACS_S3_PORT:-17070}, region ${PACS_S3_REGION:-us-east-1},
# root credentials PACS_S3_ACCESS_KEY (default cloudpacs) / PACS_S3_SECRET_KEY
# (default cloudpacs-secret-key). Buckets are directories under
# .cache/run/s3/data (kept across restarts). Object metadata (ETag, checksums,
# content-type, user metadata) lives in user xattrs when the filesystem supports
# them, otherwise in a sidecar dir .cache/run/s3/meta (`posix --sidecar`); the
# choice is made on the first start and recorded in .cache/run/s3/meta-mode.
# Log: .cache/run/s3/s3.log (request logging off: -q). Pid: .cache/run/s3/s3.pid.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SDIR="$RUN/s3"
DATA="$SDIR/data"
META="$SDIR/meta"
PIDFILE="$SDIR/s3.pid"
LOGFILE="$SDIR/s3.log"
MODEFILE="$SDIR/meta-mode"
VGW="$BIN_DIR/versitygw"
START_TIMEOUT="${PACS_S3_START_TIMEOUT:-30}"

running_pid() { pid_alive "$PIDFILE" "$DATA"; }

# http_answers PORT — true when an HTTP server answers a plain GET on the port
# (versitygw replies 403 to the unauthenticated request; any status line will do).
http_answers() {
    local line=""
    {
        exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
        printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
        IFS= read -r -t 3 line <&3 || true
        exec 3>&-
    } 2>/dev/null
    [[ "$line" == HTTP/* ]]
}

# xattrs_work DIR — can we set a user.* xattr on a file in DIR?
xattrs_work() {
    local f="$1/.xattr-probe.$$" ok=1
    : >"$f"
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.cloudpacs.probe", b"1")' "$f" 2>/dev/null && ok=0
    elif command -v setfattr >/dev/null 2>&1; then
        setfattr -n user.cloudpacs.probe -v 1 "$f" 2>/dev/null && ok=0
    fi
    rm -f "$f"
    return $ok
}

meta_mode() {
    if [[ -s "$MODEFILE" ]]; then
        cat "$MODEFILE"
        return
    fi
    local mode=sidecar
    xattrs_work "$DATA" && mode=xattr
    printf '%s\n' "$mode" >"$MODEFILE"
    echo "$mode"
}

cmd_start() {
    local pid t0 mode
    t0="$(now)"
    svc_lock "$SDIR"
    if pid="$(running_pid)"; then
        log "s3: already running (pid $pid) on http://127.0.0.1:$PACS_S3_PORT"
        return 0
    fi
    rm -f "$PIDFILE"
    [[ -x "$VGW" ]] || die "s3: $VGW missing — run infra/bootstrap.sh first"
    ensure_port_free "$PACS_S3_PORT" s3 PACS_S3_PORT
    mkdir -p "$DATA"
    mode="$(meta_mode)"
    local backend=(posix)
    if [[ "$mode" == sidecar ]]; then
        mkdir -p "$META"
        backend+=(--sidecar "$META")
    fi
    rotate_log "$LOGFILE"
    log "s3: starting versitygw on http://127.0.0.1:$PACS_S3_PORT (metadata: $mode)"
    # Credentials via env, not argv (keeps them out of `ps`).
    ROOT_ACCESS_KEY="$PACS_S3_ACCESS_KEY" ROOT_SECRET_KEY="$PACS_S3_SECRET_KEY" \
        VGW_REGION="$PACS_S3_REGION" \
        setsid "$VGW" --port "127.0.0.1:$PACS_S3_PORT" --quiet "${backend[@]}" "$DATA" \
        >>"$LOGFILE" 2>&1 </dev/null 8>&- &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"

    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            fail_with_log s3 "$LOGFILE" "versitygw exited during startup"
        fi
        if http_answers "$PACS_S3_PORT"; then
            log "s3: ready (pid $pid) in $(elapsed "$t0")"
            return 0
        fi
        sleep 0.1
    done
    fail_with_log s3 "$LOGFILE" "no HTTP answer on 127.0.0.1:$PACS_S3_PORT after ${START_TIMEOUT}s"
}

cmd_stop() {
    stop_service s3 "$SDIR" "$PIDFILE"
}

cmd_status() {
    service_status s3 "http://127.0.0.1:$PACS_S3_PORT" "data $DATA, metadata $(cat "$MODEFILE" 2>/dev/null || echo '?')" "$LOGFILE" http_answers "$PACS_S3_PORT"
}

service_main "$@"
