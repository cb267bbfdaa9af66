#!/usr/bin/env bash
# Fetches HAPI HL7 v2 2.5.1 (hapi-base and the v2.3.1, v2.5, v2.5.1 and v2.6 structures) from Maven
# Central into .cache/hapi and compiles HapiCheck.java there. Idempotent: does nothing when
# the compiled class is newer than its source. Prints the classpath to use.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../../../.." && pwd)"
OUT="$REPO/.cache/hapi"
mkdir -p "$OUT/lib"
if [ ! -f "$OUT/HapiCheck.class" ] || [ "$HERE/HapiCheck.java" -nt "$OUT/HapiCheck.class" ] || [ "$HERE/pom.xml" -nt "$OUT/HapiCheck.class" ]; then
  mvn -q -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$OUT/lib" >&2
  javac -d "$OUT" -cp "$OUT/lib/*" "$HERE/HapiCheck.java" >&2
fi
echo "$OUT:$OUT/lib/*"
