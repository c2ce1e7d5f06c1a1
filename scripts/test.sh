#!/usr/bin/env bash
# The whole test suite, as README's second command and CI (.ci/run) run it.
#
# Installs what the tests need when it is missing (every program in scripts/test-tools.txt:
# Debian packages, and the PyPI tools in a virtual environment), then runs formatting,
# lints, a build of the fuzz targets, every test in the workspace and the package test.
# Every stage runs even when an earlier one failed; a summary of all of them comes last,
# and the exit status is non-zero if any failed.
#
# Run as root: the network-namespace tests need it. Nothing here touches the machine's own
# interfaces: every VRRP/ARP packet and VIP lives in namespaces the tests create.
set -uo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/stages.sh
. scripts/stages.sh

TOOLS=scripts/test-tools.txt
VENV=/opt/k3s-ha-test-venv
# The program's path, from PATH or the directories root's programs live in.
have() {
  case "$1" in /*) [ -e "$1" ]; return ;; esac
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ||
    [ -x "$VENV/bin/$1" ]
}

install_missing() {
  local debs=() pypi=() prog src
  while read -r prog src; do
    case "$prog" in ''|'#'*) continue ;; esac
    have "$prog" && continue
    case "$src" in
      pypi:*) pypi+=("${src#pypi:}") ;;
      *) debs+=("$src") ;;
    esac
  done < "$TOOLS"
  # The PyPI tools go into a virtual environment (bookworm's pip refuses to install into
  # the system Python: PEP 668, "externally-managed-environment").
  if [ ${#pypi[@]} -gt 0 ] && ! python3 -m venv --help >/dev/null 2>&1; then
    debs+=(python3-venv)
  fi
  if [ ${#pypi[@]} -gt 0 ] && ! command -v python3 >/dev/null 2>&1; then
    debs+=(python3 python3-venv)
  fi
  if [ ${#debs[@]} -gt 0 ]; then
    mapfile -t debs < <(printf '%s\n' "${debs[@]}" | sort -u)
    if [ "$(id -u)" -ne 0 ]; then
      echo "missing packages: ${debs[*]} (run as root to install them)" >&2
      return 1
    fi
    say "installing ${debs[*]}"
    # Do not let package scripts start keepalived/haproxy/named/nginx on this machine: the
    # tests start their own, inside namespaces or on loopback ports.
    local prc=/usr/sbin/policy-rc.d created=0 rc=0
    if [ ! -e "$prc" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$prc" && chmod +x "$prc" && created=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null || rc=$?
    [ "$created" = 1 ] && rm -f "$prc"
    [ "$rc" = 0 ] || { echo "apt-get failed ($rc)" >&2; return 1; }
  fi
  if [ ${#pypi[@]} -gt 0 ]; then
    say "installing ${pypi[*]} (PyPI) into $VENV"
    if [ "$(id -u)" -ne 0 ]; then
      echo "missing PyPI tools: ${pypi[*]} (run as root to install them)" >&2
      return 1
    fi
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV" || return 1
    "$VENV/bin/pip" install -q --disable-pip-version-check "${pypi[@]}" || return 1
  fi
  # Everything listed must now be there.
  local still=()
  while read -r prog src; do
    case "$prog" in ''|'#'*) continue ;; esac
    have "$prog" || still+=("$prog ($src)")
  done < "$TOOLS"
  if [ ${#still[@]} -gt 0 ]; then
    echo "still missing after the install: ${still[*]}" >&2
    return 1
  fi
}

# --install-only: install what the tests need, then stop (a machine set up ahead of a run).
if [ "${1:-}" = "--install-only" ]; then
  export PATH="$PATH:$VENV/bin"
  install_missing
  exit
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "WARNING: not root: network-namespace tests will fail. CI runs this as root." >&2
fi
# The tests find the PyPI tools through PATH too (k3sha_support::tools also looks in $VENV/bin).
export PATH="$PATH:$VENV/bin"

log=$(mktemp)
trap 'rm -f "$log"' EXIT

run_tests() {
  # Namespace tests use their own names and subnets, so they may run in parallel; the
  # timing-sensitive ones bound their own parallelism. PIPESTATUS: cargo's status, not tee's.
  cargo test --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" 2>&1 | tee "$log"
  return "${PIPESTATUS[0]}"
}

stage "install what the tests need ($TOOLS)" install_missing
stage "cargo fmt --check" cargo fmt --all -- --check
stage "cargo clippy (all targets, warnings are errors)" \
  cargo clippy --workspace --all-targets --quiet -- -D warnings
# The fuzz targets are their own workspace (cargo fuzz builds them with nightly); a check
# on stable keeps them compiling against the code they fuzz.
check_fuzz() {
  local m rc=0
  for m in vrrp-proto/fuzz/Cargo.toml proxy-proto/fuzz/Cargo.toml; do
    cargo check --quiet --manifest-path "$m" --bins --target-dir target/fuzz-check || rc=1
  done
  return "$rc"
}
stage "cargo check the fuzz targets (vrrp-proto/fuzz, proxy-proto/fuzz)" check_fuzz
stage "cargo test (workspace)" run_tests
# Starts no service (policy-rc.d, no start on first install).
stage "package: build the .deb, lintian, units, install/upgrade/purge, real systemd" \
  ./packaging/test-package.sh

summary "$log"
