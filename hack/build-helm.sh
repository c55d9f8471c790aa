#!/usr/bin/env bash
# Builds the helm CLI from the Go module proxy at a pinned version (no prebuilt download) and caches
# it outside the repo, keyed by version. Idempotent: a cached binary is reused.
#
# A plain `go install` embeds Kubernetes 1.20 as .Capabilities.KubeVersion and "v3.x-dirty"-less
# defaults; the -ldflags set helm's own version and the Kubernetes version it templates and lints for.
# Tests pass --kube-version explicitly anyway.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-3.22.0}"
HELM_KUBE_VERSION="${HELM_KUBE_VERSION:-${KUBE_VERSION:-1.33.13}}"
CACHE_DIR="${TUNELOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tuneloop}"
kube_major="${HELM_KUBE_VERSION%%.*}"
kube_minor="$(echo "$HELM_KUBE_VERSION" | cut -d. -f2)"
OUT_DIR="$CACHE_DIR/helm/v$HELM_VERSION-k$kube_major.$kube_minor"
OUT="$OUT_DIR/helm"

if [[ -x "$OUT" ]]; then
  echo "$OUT"
  exit 0
fi
# shellcheck source=hack/cache-lock.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cache-lock.sh"
build_lock "$OUT"

command -v go >/dev/null || { echo "error: 'go' is not on PATH; install Go >= 1.24 to build helm" >&2; exit 2; }

log() { echo "[build-helm $(date +%H:%M:%S)] $*" >&2; }
log "building helm v$HELM_VERSION for Kubernetes $kube_major.$kube_minor (a few minutes on 2 cores; cached at $OUT)"
mkdir -p "$OUT_DIR"
tmp="$(mktemp -d "$OUT_DIR/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
if ! CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION \
    -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$kube_major \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kube_minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$kube_major \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kube_minor" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"; then
  echo "error: go install of helm v$HELM_VERSION failed: see the errors above." >&2
  echo "It needs Go >= 1.24 and the Go module proxy (GOPROXY=$(go env GOPROXY))." >&2
  exit 4
fi
mv "$tmp/helm" "$OUT"
log "done in $((SECONDS - start)) s: $("$OUT" version --short)"
echo "$OUT"
