# Sourced by the hack/ build scripts after their cache check: one build per cached binary at a time.
# Two callers at once (parallel test suites, `make -j`, two shells) used to compile into the same
# temporary file; now the second waits on "$OUT.lock" for the first and reuses its binary.
build_lock() {
  local out="$1"
  mkdir -p "$(dirname "$out")"
  command -v flock >/dev/null || return 0  # no util-linux: build unlocked, as before
  exec 9>"$out.lock"
  flock 9
  if [[ -x "$out" ]]; then  # built by the caller we waited for
    echo "$out"
    exit 0
  fi
}
