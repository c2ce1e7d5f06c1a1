# Stages that all run, then one summary: sourced by scripts/test.sh (and its test,
# support/tests/stages.rs). A failing stage is recorded and the next one runs anyway; the
# summary lists every stage, sums the cargo test results and returns non-zero if any stage
# failed.

STAGES=()
FAILED=()

say() { printf '\n==> %s\n' "$*"; }

# stage NAME COMMAND...: run it, remember how it went, never stop the caller.
stage() {
  local name=$1; shift
  say "$name"
  local t0=$SECONDS rc=0
  "$@" || rc=$?
  if [ "$rc" = 0 ]; then
    STAGES+=("ok      $name ($((SECONDS - t0)) s)")
  else
    STAGES+=("FAILED  $name ($((SECONDS - t0)) s, exit $rc)")
    FAILED+=("$name")
  fi
  return 0
}

# summary [CARGO_TEST_LOG]: every stage, one line over every cargo test binary in the log,
# and the verdict as the return status.
summary() {
  say "summary"
  printf '%s\n' "${STAGES[@]}"
  if [ -n "${1:-}" ] && [ -f "$1" ]; then
    awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed", p, f; if (i) printf ", %d ignored", i; printf "\n" }' "$1"
  fi
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo "FAILED: ${FAILED[*]}"
    return 1
  fi
  echo "all stages passed"
}
