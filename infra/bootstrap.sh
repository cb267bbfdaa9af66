#!/usr/bin/env bash
# infra/bootstrap.sh — idempotent install of every prerequisite of the local
# cloudpacs infrastructure on a Debian 12 machine (run as root for apt).
#
#   * apt packages: dcmtk postgresql orthanc orthanc-postgresql prometheus, the transcoder's
#     independent decoders, rsyslog rsyslog-gnutls libxml2-utils for the audit export tests,
#     and buildah podman runc debootstrap (+ helpers) for `make image`
#     (apt-get update only if something is missing)
#   * uv 0.13.8 via pip, if `uv` is not on PATH
#   * Apache Kafka broker jars -> .cache/kafka-libs (Maven, from infra/kafka/pom.xml;
#     skipped while .cache/kafka-libs/.pom.sha256 matches the pom)
#   * versitygw (S3 server) -> .cache/bin/versitygw (go install; skipped if present)
#   * ory/hydra v2.3.0 (OpenID provider) -> .cache/bin/hydra (go build in .cache/hydra-build;
#     skipped while .cache/bin/hydra.version says v2.3.0)
#
# Needs Java 17+ (always: the broker runs on it), Maven (only to fetch the jars)
# and Go >= 1.21 (only to build versitygw and hydra; go >= 1.25 or GOTOOLCHAIN=auto).
# Usage: infra/bootstrap.sh          (no arguments; safe to re-run)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APT_PACKAGES=(dcmtk postgresql orthanc orthanc-postgresql prometheus)
# Independent decoders the transcoder is checked against (GDCM, OpenJPEG, OpenJPH, dicom3tools).
APT_PACKAGES+=(libgdcm-tools libopenjp2-tools openjph-tools dicom3tools)
# The audit export's syslog collector and schema check in tests.
APT_PACKAGES+=(rsyslog rsyslog-gnutls libxml2-utils)
# PixelMed: the DICOM SR template validator (DicomSRValidator) the hl7 tests run on TID 1500 reports.
APT_PACKAGES+=(libpixelmed-java)
# DICOMweb tests: Orthanc's DICOMweb plugin (the differential peer) and headless Chromium (OHIF)
APT_PACKAGES+=(orthanc-dicomweb chromium chromium-driver)
# Container images (`make image`, infra/image.sh): buildah/podman, runc (crun refuses hybrid
# cgroups), debootstrap for the base image; rootless podman's helpers.
APT_PACKAGES+=(buildah podman runc debootstrap fuse-overlayfs uidmap slirp4netns)
UV_VERSION="0.13.8"
POM="$INFRA_DIR/kafka/pom.xml"
t0="$(now)"

mkdir -p "$CACHE" "$BIN_DIR"
# Serialise concurrent bootstraps (two shells running up.sh at once).
exec 9>"$CACHE/.bootstrap.lock"
flock 9

# ---------------------------------------------------------------- what is missing
missing_apt=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing_apt+=("$p")
        fi
    done
else
    warn "dpkg-query not found (not Debian?): not checking ${APT_PACKAGES[*]}"
fi

need_uv=0
command -v uv >/dev/null 2>&1 || need_uv=1

pom_sum="$(sha256sum "$POM" | cut -d' ' -f1)"
need_jars=1
if [[ -f "$KAFKA_LIBS/.pom.sha256" && "$(cat "$KAFKA_LIBS/.pom.sha256")" == "$pom_sum" ]] \
    && compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
    need_jars=0
fi

VGW="$BIN_DIR/versitygw"
need_vgw=1
if [[ -x "$VGW" && -f "$VGW.version" && "$(cat "$VGW.version")" == "$VERSITYGW_VERSION" ]]; then
    need_vgw=0
fi

HYDRA="$BIN_DIR/hydra"
need_hydra=1
if [[ -x "$HYDRA" && -f "$HYDRA.version" && "$(cat "$HYDRA.version")" == "$HYDRA_VERSION" ]]; then
    need_hydra=0
fi

# ---------------------------------------------------------------- prerequisites
problems=()
java_major=""
if command -v java >/dev/null 2>&1; then
    # 'openjdk version "17.0.15" 2025-04-15' / 'java version "1.8.0_…"'
    java_major="$(java -version 2>&1 | awk -F'"' '/version/ { print $2; exit }' | awk -F. '{ print ($1 == "1") ? $2 : $1 }')"
fi
if [[ -z "$java_major" || "$java_major" -lt 17 ]]; then
    problems+=("Java 17+ is required for the Kafka broker (found: ${java_major:-none}); install: apt-get install -y openjdk-17-jre-headless")
fi
if ((need_jars)) && ! command -v mvn >/dev/null 2>&1; then
    problems+=("Maven is required to fetch the Kafka jars into .cache/kafka-libs; install: apt-get install -y maven")
fi
if ((need_vgw || need_hydra)); then
    if ! command -v go >/dev/null 2>&1; then
        problems+=("Go >= 1.21 is required to build versitygw $VERSITYGW_VERSION and hydra $HYDRA_VERSION (needs go1.25; go>=1.21 fetches it via GOTOOLCHAIN=auto); Debian 12's golang-go is 1.19 (too old): install Go from https://go.dev/dl into /usr/local/go and put /usr/local/go/bin on PATH")
    else
        gov="$(go env GOVERSION 2>/dev/null || true)"   # e.g. go1.26.8
        gominor="$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$gov")"
        if ! [[ "$gominor" =~ ^[0-9]+$ ]] || ((gominor < 21)); then
            problems+=("Go >= 1.21 is required to build versitygw and hydra (found ${gov:-unknown}); install Go from https://go.dev/dl")
        fi
    fi
fi
if ((${#missing_apt[@]})) && [[ $EUID -ne 0 ]]; then
    problems+=("apt packages missing (${missing_apt[*]}) and not running as root: run 'sudo infra/bootstrap.sh' or 'sudo apt-get install -y ${missing_apt[*]}'")
fi
if ((${#problems[@]})); then
    printf 'ERROR: missing prerequisites:\n' >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 1
fi

# ---------------------------------------------------------------- apt
if ((${#missing_apt[@]})); then
    log "installing apt packages: ${missing_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${missing_apt[@]}"
else
    log "apt packages present: ${APT_PACKAGES[*]}"
fi

# ---------------------------------------------------------------- uv
if ((need_uv)); then
    log "installing uv==$UV_VERSION with pip"
    if python3 -m pip --version >/dev/null 2>&1; then
        # Debian's system python is "externally managed" (PEP 668): retry with the override.
        python3 -m pip install -q "uv==$UV_VERSION" \
            || python3 -m pip install -q --break-system-packages "uv==$UV_VERSION"
    elif command -v pip >/dev/null 2>&1; then
        pip install -q "uv==$UV_VERSION" || pip install -q --break-system-packages "uv==$UV_VERSION"
    else
        die "uv is not on PATH and pip is missing: apt-get install -y python3-pip (or install uv yourself)"
    fi
    hash -r
    command -v uv >/dev/null 2>&1 || warn "uv installed but not on PATH (check ~/.local/bin or your python's bin dir)"
else
    log "uv present: $(uv --version 2>/dev/null || echo '?')"
fi

# ---------------------------------------------------------------- Kafka jars
if ((need_jars)); then
    log "fetching Kafka broker jars with Maven into .cache/kafka-libs (first run: ~1 min)…"
    rm -rf "$KAFKA_LIBS"
    mkdir -p "$KAFKA_LIBS"
    # (Debian's Maven 3.8.7 prints stray ANSI resets even in batch mode: strip them.)
    mvn -B -q -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$KAFKA_LIBS" 2>&1 | sed -u 's/\x1b\[[0-9;]*m//g'
    compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null || die "maven ran but no kafka_2.13 jar in $KAFKA_LIBS"
    printf '%s\n' "$pom_sum" >"$KAFKA_LIBS/.pom.sha256"
    log "Kafka jars: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars"
else
    log "Kafka jars present ($(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars, pom unchanged)"
fi

# ---------------------------------------------------------------- versitygw
if ((need_vgw)); then
    log "building versitygw $VERSITYGW_VERSION (first run, ~1 min)…"
    GOBIN="$BIN_DIR" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
    [[ -x "$VGW" ]] || die "go install finished but $VGW is missing"
    printf '%s\n' "$VERSITYGW_VERSION" >"$VGW.version"
else
    log "versitygw $VERSITYGW_VERSION present (.cache/bin/versitygw)"
fi

# ---------------------------------------------------------------- hydra
# `go install github.com/ory/hydra/v2@v2.3.0` fails: hydra's go.mod has replace directives,
# which only apply to the main module. So a throwaway module of ours requires hydra as a
# tool and carries the same replaces (copied from hydra v2.3.0's go.mod).
if ((need_hydra)); then
    log "building ory/hydra $HYDRA_VERSION into .cache/bin/hydra (first run: ~2-5 min)…"
    HB="$CACHE/hydra-build"
    rm -rf "$HB"
    mkdir -p "$HB"
    (
        cd "$HB"
        go mod init local/hydratool >/dev/null 2>&1
        go get -tool "github.com/ory/hydra/v2@$HYDRA_VERSION"
        cat >>go.mod <<'GOMOD'
replace github.com/gobuffalo/pop/v6 => github.com/ory/pop/v6 v6.2.1-0.20241121111754-e5dfc0f3344b
replace github.com/ory/hydra-client-go/v2 => github.com/ory/hydra-client-go/v2 v2.2.1
GOMOD
        go mod tidy
        go build -o "$HYDRA.tmp" github.com/ory/hydra/v2
    ) || die "building hydra $HYDRA_VERSION failed (needs the Go module proxy; see the messages above)"
    mv -f "$HYDRA.tmp" "$HYDRA"
    "$HYDRA" version >/dev/null 2>&1 || die "hydra built but '$HYDRA version' does not run"
    printf '%s\n' "$HYDRA_VERSION" >"$HYDRA.version"
    rm -rf "$HB"
    log "hydra $HYDRA_VERSION built"
else
    log "hydra $HYDRA_VERSION present (.cache/bin/hydra)"
fi

log "bootstrap done in $(elapsed "$t0")"
