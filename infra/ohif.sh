#!/usr/bin/env bash
# infra/ohif.sh — fetch the prebuilt OHIF v3 viewer (npm package @ohif/app, which ships its
# built `dist/`) into .cache/ohif/<version>/package/dist, for the DICOMweb tests that drive it
# with headless Chromium. Idempotent: skipped when the version is already unpacked.
#
# Usage: infra/ohif.sh            (prints the dist directory)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OHIF_VERSION="${OHIF_VERSION:-3.13.2}"
target="$CACHE/ohif/$OHIF_VERSION"
if [[ ! -f "$target/package/dist/index.html" ]]; then
    mkdir -p "$target"
    exec 9>"$CACHE/ohif/.lock"
    flock 9
    if [[ ! -f "$target/package/dist/index.html" ]]; then
        tarball="$(cd "$target" && npm pack --silent "@ohif/app@$OHIF_VERSION")"
        tar -xzf "$target/$tarball" -C "$target"
        rm -f "$target/$tarball"
    fi
fi
echo "$target/package/dist"
