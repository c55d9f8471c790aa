#!/usr/bin/env bash
# Builds kube-apiserver from Kubernetes' own Go modules (no prebuilt binaries can be downloaded here)
# and caches it outside the repo, keyed by version. Idempotent: a cached binary is reused.
#
# k8s.io/kubernetes requires its staging modules at v0.0.0 and points them at ./staging with
# `replace`; a consumer module must replace each with its published v0.<minor>.<patch> instead.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-1.33.13}"
CACHE_DIR="${TUNELOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneloop}"
OUT="$CACHE_DIR/kube-apiserver/v$KUBE_VERSION/kube-apiserver"

if [[ -x "$OUT" ]]; then
  echo "$OUT"
  exit 0
fi
# shellcheck source=hack/cache-lock.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cache-lock.sh"
build_lock "$OUT"

command -v go >/dev/null || { echo "error: 'go' is not on PATH; install Go >= 1.24 to build kube-apiserver" >&2; exit 2; }

staging_ver="v0.${KUBE_VERSION#*.}"
work="$(mktemp -d "${TMPDIR:-/tmp}/kube-apiserver-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"

log() { echo "[build-kube-apiserver $(date +%H:%M:%S)] $*" >&2; }

log "building kube-apiserver v$KUBE_VERSION (first build takes many minutes on 2 cores; cached at $OUT)"
go mod init tuneloop.local/kube-apiserver-build >/dev/null 2>&1
log "fetching k8s.io/kubernetes@v$KUBE_VERSION go.mod"
if ! info="$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" 2>&1)"; then
  echo "error: could not download k8s.io/kubernetes@v$KUBE_VERSION from the Go module proxy:" >&2
  echo "$info" | grep -i error | head -3 >&2
  echo "Check KUBE_VERSION (list versions: go list -m -versions k8s.io/kubernetes) and GOPROXY." >&2
  exit 3
fi
gomod="$(echo "$info" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"

args=(-require="k8s.io/kubernetes@v$KUBE_VERSION")
while read -r mod; do
  args+=(-replace="$mod=$mod@$staging_ver")
done < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$gomod")
log "replacing ${#args[@]} staging modules with $staging_ver"
go mod edit "${args[@]}"

log "downloading modules and compiling (progress: go -v lists packages as they build)"
mkdir -p "$(dirname "$OUT")"
set +e
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -v -trimpath \
  -ldflags "-s -w \
    -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION \
    -X k8s.io/component-base/version.gitMajor=${KUBE_VERSION%%.*} \
    -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION" \
  -o "$OUT.tmp" k8s.io/kubernetes/cmd/kube-apiserver 2>&1 | awk '
    /^go: downloading/ {d++; if (d % 50 == 0) {printf "[build-kube-apiserver] %d modules downloaded\n", d > "/dev/stderr"; fflush()}; next}
    /^(go: |#|[^ ]+\.go:[0-9])/ {print > "/dev/stderr"; next}   # errors verbatim
    {n++; if (n % 200 == 0) {printf "[build-kube-apiserver] %d packages compiled (last: %s)\n", n, $0 > "/dev/stderr"; fflush()}}'
status=${PIPESTATUS[0]}
set -e
if [[ $status -ne 0 ]]; then
  echo "error: go build of kube-apiserver v$KUBE_VERSION failed (exit $status): see the errors above." >&2
  echo "It needs Go >= 1.24 and the Go module proxy (GOPROXY=$(go env GOPROXY))." >&2
  exit 4
fi
mv "$OUT.tmp" "$OUT"
log "done: $("$OUT" --version)"
echo "$OUT"
