#!/usr/bin/env bash
# The whole test suite, as README's second command and CI (.ci/run) run it.
#
# Installs what the tests need when it is missing (Debian packages: keepalived, haproxy,
# bind9, iperf3, wrk, chromium, lintian...; kubernetes-validate from PyPI), then runs
# formatting, lints and every test in the workspace. Run as root: the network-namespace
# tests need it (without root they skip, loudly). Nothing here touches the machine's own
# interfaces: every VRRP/ARP packet and VIP lives in namespaces the tests create.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# Debian packages the tests use, as "command:package".
NEEDS=(
  "ip:iproute2" "ping:iputils-ping" "curl:curl" "openssl:openssl"
  "keepalived:keepalived" "haproxy:haproxy"
  "named:bind9" "named-checkzone:bind9-utils" "dig:bind9-dnsutils"
  "iperf3:iperf3" "wrk:wrk" "chromium:chromium" "lintian:lintian"
  "pip3:python3-pip"
)

install_missing() {
  local missing=()
  for pair in "${NEEDS[@]}"; do
    local cmd=${pair%%:*} pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
      missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "missing packages: ${missing[*]} (run as root to install them)" >&2
      return 0
    fi
    say "installing ${missing[*]}"
    # Do not let package scripts start keepalived/haproxy/named on this machine: the tests
    # start their own, inside namespaces or on loopback ports.
    local prc=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$prc" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$prc" && chmod +x "$prc" && created=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ "$created" = 1 ] && rm -f "$prc"
  fi
  if ! command -v kubernetes-validate >/dev/null 2>&1; then
    say "installing kubernetes-validate (PyPI)"
    python3 -m pip install -q kubernetes-validate || pip3 install -q --break-system-packages kubernetes-validate
  fi
}

if [ "$(id -u)" -ne 0 ]; then
  echo "WARNING: not root: network-namespace tests will SKIP. CI runs this as root." >&2
fi

install_missing

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "cargo test (workspace)"
# Namespace tests use their own names and subnets, so they may run in parallel; the
# timing-sensitive ones bound their own parallelism.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" 2>&1 | tee "$log"

say "package: build the .deb, lintian, unit checks, install/upgrade/remove/purge here"
# Starts no service (policy-rc.d, no start on first install); skips dpkg steps without root
# and when k3s-ha was already installed on this machine.
./packaging/test-package.sh

# One closing line over every cargo test binary (the package test above has its own).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\ntests: %d passed, %d failed", p, f; if (i) printf ", %d skipped", i; printf "\n" }' "$log"
