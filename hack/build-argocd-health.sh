#!/usr/bin/env bash
# Builds hack/argocd-health (Argo CD's health-check sandbox on gopher-lua) once per source version and
# caches it outside the repo. Idempotent: prints the binary's path.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/argocd-health" && pwd)"
CACHE_DIR="${TUNELOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneloop}"
key="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/*.go | sha256sum | cut -c1-16)"
OUT="$CACHE_DIR/argocd-health/$key/argocd-health"

if [[ -x "$OUT" ]]; then
  echo "$OUT"
  exit 0
fi
# shellcheck source=hack/cache-lock.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cache-lock.sh"
build_lock "$OUT"
command -v go >/dev/null || { echo "error: 'go' is not on PATH; install Go >= 1.24 to build the Argo CD health harness" >&2; exit 2; }
mkdir -p "$(dirname "$OUT")"
echo "[build-argocd-health] building $OUT" >&2
(cd "$SRC" && CGO_ENABLED=0 go build -trimpath -o "$OUT.tmp" .)
mv "$OUT.tmp" "$OUT"
echo "$OUT"
