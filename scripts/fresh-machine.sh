#!/usr/bin/env bash
# Run .ci/run on a fresh machine: a minimal Debian bookworm root filesystem made with
# mmdebstrap from Debian's own packages (variant minbase: no compiler, no CA certificates,
# no iproute2), with only the Rust toolchain brought in, and a clean clone of this
# repository. Everything else the suite needs, scripts/test.sh must install itself.
#
#   sudo ./scripts/fresh-machine.sh            # the committed HEAD of this checkout
#   KEEP=1 sudo ./scripts/fresh-machine.sh     # keep the root filesystem afterwards
#
# The suite runs in a chroot with /proc, /sys, /dev and a fresh /run: it shares this
# machine's kernel (its tests make their own network namespaces, as on any machine) but
# none of its installed packages. Output: $WORK/ci.log; the exit status is .ci/run's.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "needs root (mmdebstrap, chroot, mounts)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }

REPO=$(pwd)
WORK=${WORK:-/var/tmp/k3sha-fresh}
ROOT="$WORK/root"
TOOLCHAIN=$(rustup toolchain list | awk '/\(default\)/ {print $1; exit}')
[ -n "$TOOLCHAIN" ] || TOOLCHAIN=stable-x86_64-unknown-linux-gnu
say() { printf '\n==> fresh machine: %s\n' "$*"; }

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
  # Namespaces made by a test that died inside the chroot (they live in the shared kernel).
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$ROOT"; fi
}
trap cleanup EXIT

say "bookworm root filesystem in $ROOT (mmdebstrap --variant=minbase)"
rm -rf "$ROOT"
mkdir -p "$WORK"
mmdebstrap --quiet --variant=minbase bookworm "$ROOT" http://deb.debian.org/debian
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# This network's trust anchors, like its resolver: where HTTPS goes through an inspecting
# proxy (as here), its CA must be trusted to reach crates.io and PyPI. The chroot gets the
# host's bundle as one file and the variables that point cargo, pip and curl at it;
# nothing else of the host's configuration.
HOST_CA=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
CA_ENV=()
if [ -f "$HOST_CA" ]; then
  cp "$HOST_CA" "$ROOT/etc/host-network-ca.pem"
  for v in SSL_CERT_FILE CARGO_HTTP_CAINFO PIP_CERT REQUESTS_CA_BUNDLE CURL_CA_BUNDLE; do
    CA_ENV+=("$v=/etc/host-network-ca.pem")
  done
fi

say "the Rust toolchain ($TOOLCHAIN) and nothing else"
mkdir -p "$ROOT/root/.rustup/toolchains" "$ROOT/root/.cargo/bin"
cp -a "$HOME/.rustup/toolchains/$TOOLCHAIN" "$ROOT/root/.rustup/toolchains/"
cp -a "$HOME/.rustup/settings.toml" "$ROOT/root/.rustup/" 2>/dev/null || true
cp -a "$HOME/.cargo/bin/rustup" "$ROOT/root/.cargo/bin/"
for b in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt; do
  ln -sf rustup "$ROOT/root/.cargo/bin/$b"
done

say "a clean clone of $(git -C "$REPO" rev-parse --short HEAD)"
# git is not in minbase: clone here, copy the clone in.
git clone -q "$REPO" "$ROOT/root/k3s-ha"

say "mounts"
# The root must be a mount point of its own: `ip netns exec` / `ip -n` run
# `mount --make-rslave /`, which fails on a plain directory.
mount --bind "$ROOT" "$ROOT"
mounted+=("$ROOT")
for d in proc sys dev dev/pts; do
  mkdir -p "$ROOT/$d"
  mount --bind "/$d" "$ROOT/$d"
  mounted+=("$ROOT/$d")
done
mount -t tmpfs tmpfs "$ROOT/run"
mounted+=("$ROOT/run")
mkdir -p "$ROOT/run/netns" "$ROOT/sys/fs/cgroup"
if mountpoint -q /sys/fs/cgroup; then
  mount --rbind /sys/fs/cgroup "$ROOT/sys/fs/cgroup"
  mounted+=("$ROOT/sys/fs/cgroup")
fi

say ".ci/run in the chroot (log: $WORK/ci.log)"
set +e
chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
  PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  RUSTUP_TOOLCHAIN="$TOOLCHAIN" "${CA_ENV[@]}" \
  /bin/bash -c 'cd /root/k3s-ha && time ./.ci/run' 2>&1 | tee "$WORK/ci.log"
rc=${PIPESTATUS[0]}
set -e
say ".ci/run exited $rc"
exit "$rc"
