#!/usr/bin/env bash
# Fetches promtool (Prometheus' rule checker) from Debian's pinned `prometheus` package without installing it
# (apt-get download + dpkg-deb -x) and caches the binary outside the repo, keyed by version. Idempotent:
# prints the binary's path. The rules tests call this; `make promtool` does too.
set -euo pipefail

PROMETHEUS_DEB_VERSION="${PROMETHEUS_DEB_VERSION:-2.42.0+ds-5+deb12u1}"
CACHE_DIR="${TUNELOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneloop}"
OUT_DIR="$CACHE_DIR/promtool/$PROMETHEUS_DEB_VERSION"
OUT="$OUT_DIR/promtool"

if [[ -x "$OUT" ]]; then
  echo "$OUT"
  exit 0
fi
# shellcheck source=hack/cache-lock.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cache-lock.sh"
build_lock "$OUT"
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
  || { echo "error: promtool comes from Debian's prometheus package; apt-get and dpkg-deb are needed" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "[get-promtool] downloading prometheus=$PROMETHEUS_DEB_VERSION" >&2
(cd "$work" && apt-get download -q "prometheus=$PROMETHEUS_DEB_VERSION" >&2) \
  || { echo "error: apt-get download prometheus=$PROMETHEUS_DEB_VERSION failed; run apt-get update, or set" \
            "PROMETHEUS_DEB_VERSION to a version apt-cache policy prometheus lists" >&2; exit 2; }
dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
mkdir -p "$OUT_DIR"
cp "$work/x/usr/bin/promtool" "$OUT.tmp"
chmod +x "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
