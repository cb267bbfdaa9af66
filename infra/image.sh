#!/usr/bin/env bash
# infra/image.sh — build the cloudpacs container images on this machine from Debian packages
# and PyPI alone (no Docker engine, no Docker Hub, no ghcr.io).
#
#   infra/image.sh [SERVICE...]     (default: storage indexer gateway; `make image`)
#
# 1. Base image localhost/cloudpacs-base:bookworm: `debootstrap --variant=minbase bookworm`
#    from the apt mirror this machine uses, plus python3.11 (Debian 12's Python), tzdata,
#    ca-certificates and netbase — what python:3.11-slim-bookworm carries. The root file
#    system is kept as a tar in .cache/image/ (rebuilt only when the package list changes),
#    then imported with `podman import`.
# 2. uv image localhost/cloudpacs-uv:$UV_VERSION: the `uv` binary out of the uv wheel on PyPI,
#    alone at /uv — the layout of ghcr.io/astral-sh/uv that the Dockerfile copies from.
# 3. One image per service: `buildah build` of the repository's Dockerfile with
#    PYTHON_IMAGE/UV_IMAGE pointing at the two local images, tagged
#    localhost/cloudpacs/<service>:dev. Layers are cached, so a re-run after a source edit
#    only redoes the workspace install.
#
# Environment: PACS_DEBIAN_MIRROR (default: the first deb.debian.org-style URI in
# /etc/apt/sources.list*), PACS_IMAGE_TAG (default dev), PACS_IMAGE_ISOLATION (buildah
# --isolation; default oci, chroot where the OCI runtime cannot run).
# Needs root and: buildah podman runc debootstrap (infra/bootstrap.sh installs them).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

UV_VERSION="0.13.8"                      # the Dockerfile's default ghcr.io/astral-sh/uv tag
SUITE="bookworm"
BASE_IMAGE="localhost/cloudpacs-base:$SUITE"
UV_IMAGE="localhost/cloudpacs-uv:$UV_VERSION"
TAG="${PACS_IMAGE_TAG:-dev}"
ISOLATION="${PACS_IMAGE_ISOLATION:-oci}"
# runc and ulimits this machine allows (why: infra/containers.conf).
export CONTAINERS_CONF="${CONTAINERS_CONF:-$INFRA_DIR/containers.conf}"
# The CA bundle uv trusts in the build (a TLS-inspecting proxy's CA lives there); a build
# secret, so it never lands in an image layer.
CA_BUNDLE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
# What python:3.11-slim-bookworm holds beyond minbase (python3.11 brings the stdlib with
# ssl, sqlite3, ctypes…); `passwd` (groupadd/useradd in the Dockerfile) is already in minbase.
BASE_PACKAGES="python3.11,ca-certificates,netbase,tzdata"
IMAGE_CACHE="$CACHE/image"
SERVICES=("$@")
((${#SERVICES[@]})) || SERVICES=(storage indexer gateway)
t0="$(now)"

# ---------------------------------------------------------------- prerequisites
missing=()
for tool in buildah podman debootstrap runc; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
((${#missing[@]} == 0)) \
    || die "missing ${missing[*]}: run 'sudo infra/bootstrap.sh' (or apt-get install -y buildah podman runc debootstrap fuse-overlayfs uidmap slirp4netns)"
[[ $EUID -eq 0 ]] || die "debootstrap and the image build need root here: run 'sudo make image'"
for svc in "${SERVICES[@]}"; do
    [[ -f "$REPO/services/$svc/pyproject.toml" ]] \
        || die "no service '$svc' (no services/$svc/pyproject.toml); services: $(cd "$REPO/services" && ls -d */ | tr -d / | tr '\n' ' ')"
done
mkdir -p "$IMAGE_CACHE"
exec 9>"$IMAGE_CACHE/.lock"
flock 9

# ---------------------------------------------------------------- 1. base image
debian_mirror() {
    if [[ -n "${PACS_DEBIAN_MIRROR:-}" ]]; then
        printf '%s\n' "$PACS_DEBIAN_MIRROR"
        return
    fi
    # deb822 "URIs: …/debian" or one-line "deb URI bookworm main"; skip -security and others.
    local uri
    uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '/^URIs:/ { print $2 } /^deb / { print ($2 ~ /^\[/) ? $3 : $2 }' \
        | grep -E '/debian/?$' | head -n1 || true)"
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

MIRROR="$(debian_mirror)"
BASE_TAR="$IMAGE_CACHE/base-$SUITE.tar"
BASE_STAMP="$BASE_TAR.stamp"
base_key="$SUITE minbase $BASE_PACKAGES $MIRROR slim-2"   # bump the suffix when the recipe changes
if [[ -s "$BASE_TAR" && -f "$BASE_STAMP" && "$(cat "$BASE_STAMP")" == "$base_key" ]]; then
    log "base root file system cached: ${BASE_TAR#"$REPO"/} ($(du -h "$BASE_TAR" | cut -f1))"
else
    log "debootstrap --variant=minbase $SUITE from $MIRROR with $BASE_PACKAGES (first run: 2-5 min)…"
    t1="$(now)"
    root="$IMAGE_CACHE/rootfs-$SUITE.tmp"
    rm -rf "$root"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$root" "$MIRROR" \
        >"$IMAGE_CACHE/debootstrap.log" 2>&1 \
        || die "debootstrap failed (log: ${IMAGE_CACHE#"$REPO"/}/debootstrap.log, and $root/debootstrap/debootstrap.log); check that $MIRROR is reachable (apt-get update) or set PACS_DEBIAN_MIRROR"
    # The Dockerfile (and uv in it) expect python3.11 where the python images have it.
    ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3.11"
    ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3"
    ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
    # What an image does not need: apt lists and caches, man pages, translations (33 MB),
    # debootstrap's logs. The dpkg excludes keep it so for packages a derived image installs
    # (as Debian's own -slim images do).
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log \
        "$root"/usr/share/locale/* "$root"/debootstrap
    # Docs go too, but each package's copyright file stays (the licences travel with the image).
    find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' >"$root/etc/dpkg/dpkg.cfg.d/cloudpacs-slim"
    # Keep the apt sources of the mirror so `apt-get update` works in a derived image.
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$root/etc/apt/sources.list"
    tar --numeric-owner --xattrs -C "$root" -cf "$BASE_TAR.tmp" . \
        || die "could not tar $root"
    mv -f "$BASE_TAR.tmp" "$BASE_TAR"
    printf '%s\n' "$base_key" >"$BASE_STAMP"
    rm -rf "$root"
    log "base root file system built in $(elapsed "$t1"): $(du -h "$BASE_TAR" | cut -f1)"
fi
# (Re)import when the image is missing or older than the tar.
base_id="$(podman image inspect --format '{{.Labels}}' "$BASE_IMAGE" 2>/dev/null || true)"
tar_sum="$(stat -c '%Y-%s' "$BASE_TAR")"
if [[ "$base_id" != *"cloudpacs.base.tar:$tar_sum"* ]]; then
    log "importing $BASE_IMAGE"
    podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL cloudpacs.base.tar=$tar_sum" \
        --change "LABEL org.opencontainers.image.description=Debian $SUITE minbase + python3.11 (debootstrap)" \
        "$BASE_TAR" "$BASE_IMAGE" >/dev/null \
        || die "podman import of $BASE_TAR failed; remove it (rm ${BASE_TAR#"$REPO"/}*) to rebuild"
fi
podman run --rm --network none "$BASE_IMAGE" python3.11 -c 'import ssl, sqlite3, ctypes, zoneinfo' \
    || die "$BASE_IMAGE does not run 'python3.11 -c import ssl, sqlite3, ctypes, zoneinfo' (error above). An OCI runtime or setrlimit error means containers cannot start here: see infra/containers.conf (CONTAINERS_CONF=$CONTAINERS_CONF) and docs/container-image.md; otherwise the base is broken: rm ${BASE_TAR#"$REPO"/}* and re-run"
log "base image $BASE_IMAGE ready ($(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"

# ---------------------------------------------------------------- 2. uv image
UV_DIR="$IMAGE_CACHE/uv-$UV_VERSION"
if ! podman image exists "$UV_IMAGE"; then
    if [[ ! -x "$UV_DIR/uv" ]]; then
        log "fetching the uv $UV_VERSION wheel from PyPI"
        rm -rf "$UV_DIR"
        mkdir -p "$UV_DIR/wheel"
        # --only-binary: the wheel carries the prebuilt binary (no Rust toolchain needed).
        python3 -m pip download -q --no-deps --only-binary=:all: --dest "$UV_DIR/wheel" "uv==$UV_VERSION" \
            || die "could not download uv==$UV_VERSION from PyPI (pip download); check the network or pip's index settings"
        whl="$(find "$UV_DIR/wheel" -name "uv-$UV_VERSION-*.whl" | head -n1)"
        [[ -n "$whl" ]] || die "pip download gave no uv wheel in $UV_DIR/wheel"
        python3 - "$whl" "$UV_DIR/uv" "$UV_VERSION" <<'PY' || die "could not extract uv from $whl"
import os, sys, zipfile
wheel, out, version = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    data = z.read(f"uv-{version}.data/scripts/uv")
with open(out, "wb") as f:
    f.write(data)
os.chmod(out, 0o755)
PY
    fi
    "$UV_DIR/uv" --version | grep -q "uv $UV_VERSION" || die "$UV_DIR/uv is not uv $UV_VERSION; rm -rf ${UV_DIR#"$REPO"/}"
    log "importing $UV_IMAGE (uv binary at /uv)"
    tar --owner=0 --group=0 -C "$UV_DIR" -cf "$UV_DIR/uv.tar" uv
    podman import --change 'ENTRYPOINT ["/uv"]' "$UV_DIR/uv.tar" "$UV_IMAGE" >/dev/null \
        || die "podman import of the uv image failed"
fi
log "uv image $UV_IMAGE ready"

# ---------------------------------------------------------------- 3. service images
for svc in "${SERVICES[@]}"; do
    image="localhost/cloudpacs/$svc:$TAG"
    log "building $image (buildah, isolation $ISOLATION; first build of a service: several minutes)…"
    t1="$(now)"
    secret=()
    [[ -s "$CA_BUNDLE" ]] && secret=(--secret "id=ca_bundle,src=$CA_BUNDLE")
    if ! buildah build --layers --pull=never --isolation "$ISOLATION" "${secret[@]}" \
        --build-arg "SERVICE=$svc" \
        --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
        --build-arg "UV_IMAGE=$UV_IMAGE" \
        --tag "$image" --file "$REPO/Dockerfile" "$REPO" 2>&1 | sed -u 's/^/    /'; then
        die "building $image failed (see above). If the RUN steps cannot start a container, retry with PACS_IMAGE_ISOLATION=chroot; if uv cannot reach PyPI, check the network from a container (podman run --rm $BASE_IMAGE python3 -c 'import urllib.request as u; u.urlopen(\"https://pypi.org\")')"
    fi
    # buildah 1.28 leaves a working container behind for the `FROM ${UV_IMAGE} AS uv` stage
    # (used only by COPY --from) on every build; remove those (the lock above makes them ours).
    buildah containers --format '{{.ContainerID}} {{.ContainerName}}' \
        | awk '$2 ~ /^cloudpacs-uv-working-container(-[0-9]+)?$/ { print $1 }' \
        | xargs -r buildah rm >/dev/null
    size="$(podman image inspect --format '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
    log "$image built in $(elapsed "$t1") ($size)"
done
log "images built in $(elapsed "$t0"): $(printf 'localhost/cloudpacs/%s:'"$TAG"' ' "${SERVICES[@]}")"
log "run them: podman run --rm --network host localhost/cloudpacs/storage:$TAG  (settings as PACS_* env; see docs/container-image.md)"
