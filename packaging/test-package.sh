#!/usr/bin/env bash
# The k3s-ha .deb, end to end, on this machine:
#   1. build it with cargo-deb (installed from crates.io when missing), twice: revision 1
#      and revision 2 (for the upgrade);
#   2. lintian: no error or warning (overrides, each with its reason, are in
#      packaging/lintian-overrides);
#   3. the units: `systemd-analyze verify` clean, `systemd-analyze security --offline=yes`
#      rating each 3.0 or lower;
#   4. dpkg -i: the files, the conffile and its permissions, the system user, the enable
#      links, lbctl accepting the shipped cluster.toml, and NO daemon started; then the
#      installed daemons run as user k3s-ha with only their units' capabilities, inside a
#      network namespace the script creates (vrrpd takes the VIP, lbd binds port 80);
#   5. upgrade to revision 2 keeping an edited conffile, with revision 1's lbd running (as
#      k3s-ha, in a namespace of ours): the postinst hands it over to the new binary
#      (lbctl upgrade lbd) with 20 connections held through it and new ones opened all
#      along: nothing refused, reset or lost, a new PID, the old one gone after its
#      connections; policy-rc.d forbidding a restart of lbd.service keeps the running lbd,
#      and a new binary that cannot take over (a bad cluster.toml) leaves it serving;
#   6. dpkg -r, then dpkg -P: nothing left behind but the system user;
#   and (3d) the package under a real systemd in a booted container (test-systemd.sh),
#   including the upgrade to revision 2 there.
#
# Safe here: a policy-rc.d that refuses every start is in place while dpkg runs (it allows
# only a restart of lbd.service, which the postinst asks before handing a running lbd
# over; the only lbd on /run/k3s-ha is this script's), the postinst starts nothing on a
# first install, and the script refuses to touch a k3s-ha that was installed before it
# ran (set K3SHA_PKG_TEST_FORCE=1 to allow it). Needs root
# for dpkg; without root it builds and lints, then SKIPS the rest, loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> package: %s\n' "$*"; }
fail() { printf 'FAIL (package): %s\n' "$*" >&2; exit 1; }
check() { local what=$1; shift; if "$@"; then echo "ok: $what"; else fail "$what"; fi; }

OUT=${K3SHA_PKG_OUT:-target/k3s-ha-package-test}
UNITS=(lbd vrrpd)
rm -rf "$OUT" && mkdir -p "$OUT"

# --- 1. build ---------------------------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
# One cargo-deb version, so the package does not change with whatever is installed (2.0.0
# did not mark /etc files as conffiles; lbctl/Cargo.toml now declares it anyway).
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  say "installing cargo-deb $CARGO_DEB_VERSION from crates.io (found: $(cargo deb --version 2>/dev/null || echo none))"
  cargo install cargo-deb --locked --force --version "$CARGO_DEB_VERSION"
fi
check "cargo-deb is $CARGO_DEB_VERSION" test "$(cargo deb --version)" = "cargo-deb $CARGO_DEB_VERSION"
say "building vrrpd, lbd, lbctl (release)"
cargo build --release --quiet --bins -p vrrpd -p lbd -p lbctl
say "cargo deb (revisions 1 and 2)"
cargo deb -p lbctl --no-build --strip --deb-revision 1 -o "$OUT/" >/dev/null
cargo deb -p lbctl --no-build --strip --deb-revision 2 -o "$OUT/" >/dev/null
DEB1=$(ls "$OUT"/k3s-ha_*-1_*.deb)
DEB2=$(ls "$OUT"/k3s-ha_*-2_*.deb)
echo "$DEB1"; echo "$DEB2"

# --- 2. contents and lintian --------------------------------------------------------------
say "contents"
dpkg-deb -c "$DEB1" | awk '{print $6}' | sed 's|^\./|/|' | sort > "$OUT/contents.txt"
for f in /usr/sbin/vrrpd /usr/sbin/lbd /usr/bin/lbctl /etc/k3s-ha/cluster.toml \
         /usr/lib/systemd/system/vrrpd.service /usr/lib/systemd/system/lbd.service \
         /usr/share/man/man8/vrrpd.8.gz /usr/share/man/man8/lbd.8.gz /usr/share/man/man8/lbctl.8.gz \
         /usr/share/doc/k3s-ha/copyright /usr/share/doc/k3s-ha/changelog.Debian.gz \
         /usr/share/doc/k3s-ha/operations.md /usr/share/doc/k3s-ha/migration.md \
         /usr/share/lintian/overrides/k3s-ha; do
  check "package has $f" grep -qx "$f" "$OUT/contents.txt"
done
check "cluster.toml is a conffile" \
  bash -c "dpkg-deb -I '$DEB1' conffiles | grep -qx /etc/k3s-ha/cluster.toml"
check "the packaged cluster.toml is examples/cluster.toml" \
  bash -c "dpkg-deb --fsys-tarfile '$DEB1' | tar -xOf - ./etc/k3s-ha/cluster.toml | cmp -s - examples/cluster.toml"

check "lintian overrides name their instances (no wildcard hides a future typo)" \
  bash -c "! grep -v '^#' packaging/lintian-overrides | grep -q '\\*'"
say "lintian"
if ! command -v lintian >/dev/null; then
  fail "lintian is not installed (scripts/test.sh installs it; apt-get install lintian)"
fi
# --fail-on error,warning: any E: or W: tag fails; I: tags are shown, overridden ones hidden.
lintian --fail-on error,warning --info "$DEB1" | tee "$OUT/lintian.txt" || fail "lintian: see above"
echo "ok: lintian (no error or warning)"

say "systemd-analyze security --offline=yes"
systemd-analyze --version | head -1
for u in "${UNITS[@]}"; do
  score=$(systemd-analyze security --offline=yes "systemd/$u.service" 2>&1 |
    sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
  [ -n "$score" ] || fail "no exposure score for $u.service"
  check "$u.service exposure $score <= 3.0" awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }'
done

# --- 3. install ---------------------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP (package): not root: dpkg -i / upgrade / purge steps NOT run. CI runs as root." >&2
  exit 0
fi
if dpkg-query -W -f='${Status}' k3s-ha 2>/dev/null | grep -q "installed"; then
  if [ "${K3SHA_PKG_TEST_FORCE:-0}" != 1 ]; then
    echo "SKIP (package): k3s-ha is already installed here; not replacing it." >&2
    echo "  (K3SHA_PKG_TEST_FORCE=1 to run anyway: it upgrades, then PURGES the package)" >&2
    exit 0
  fi
fi
echo "PID 1: $(ps -p 1 -o comm= || true); systemd running: $([ -d /run/systemd/system ] && echo yes || echo no)"

# Refuse every service start while the test's dpkg runs (deb-systemd-invoke honours it),
# but the handover of the test's own lbd (the postinst asks for "lbd.service restart").
PRC=/usr/sbin/policy-rc.d
PRC_MADE=0
prc_allow_lbd() {
  printf '#!/bin/sh\n# k3s-ha packaging test: start nothing; hand the test'"'"'s lbd over\n[ "$1 $2" = "lbd.service restart" ] && exit 0\nexit 101\n' > "$PRC"
  chmod 755 "$PRC"
}
prc_deny_all() {
  printf '#!/bin/sh\n# k3s-ha packaging test: start nothing\nexit 101\n' > "$PRC"
  chmod 755 "$PRC"
}
# A policy-rc.d of the machine's own (a container image's "exit 101") is set aside for the
# test's run and put back at the end: the test's refuses as much, but for its own lbd.
PRC_SAVED=""
if [ -e "$PRC" ] || [ -L "$PRC" ]; then
  PRC_SAVED="$PRC.k3sha-pkgtest-saved"
  mv "$PRC" "$PRC_SAVED"
fi
prc_allow_lbd
PRC_MADE=1
RUN_MADE=0
cleanup() {
  [ "$PRC_MADE" = 1 ] && rm -f "$PRC"
  [ -n "$PRC_SAVED" ] && mv "$PRC_SAVED" "$PRC"
  # Only what this script started: the daemons (an upgraded lbd too), the stand-in, the
  # connection holder, the namespace, the temp dir, /run/k3s-ha if it made it.
  for pid in ${VRRPD_PID:-} ${LBD_PID:-} ${NEW_LBD_PID:-} ${BACKEND_PID:-} ${HOLD_PID:-}; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ -n "${NS:-}" ] && ip netns list | grep -qw "$NS"; then ip netns del "$NS" || true; fi
  [ -n "${PRIV:-}" ] && rm -rf "$PRIV"
  [ "$RUN_MADE" = 1 ] && rm -rf /run/k3s-ha
  if [ "${PURGED:-0}" != 1 ] && dpkg-query -W k3s-ha >/dev/null 2>&1; then
    dpkg -P k3s-ha >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# Processes running one of the installed daemons' binaries (by exe path, not by name:
# tests elsewhere run vrrpd/lbd from target/).
installed_daemons() {
  local p exe
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null || true)
    case "$exe" in /usr/sbin/vrrpd|/usr/sbin/lbd) echo "${p#/proc/} $exe" ;; esac
  done
}
enabled_link() { # the multi-user.target.wants link of a unit points at the packaged unit
  # (deb-systemd-helper may write /lib/systemd/system/...: the same file on merged /usr)
  local l="/etc/systemd/system/multi-user.target.wants/$1.service"
  [ -L "$l" ] && [ "$(readlink -f "$l")" = "$(readlink -f "/usr/lib/systemd/system/$1.service")" ]
}

say "dpkg -i (revision 1)"
dpkg -i "$DEB1"
check "installed version is -1" bash -c "dpkg-query -W -f='\${Version}' k3s-ha | grep -q -- '-1$'"
for f in /usr/sbin/vrrpd /usr/sbin/lbd /usr/bin/lbctl; do check "$f is executable" test -x "$f"; done
check "vrrpd --version runs" /usr/sbin/vrrpd --version
check "lbd --version runs" /usr/sbin/lbd --version
check "dpkg recorded checksums (no md5sums in the .deb)" test -s /var/lib/dpkg/info/k3s-ha.md5sums
check "dpkg --verify k3s-ha: nothing modified" bash -c '[ -z "$(dpkg --verify k3s-ha)" ]'
check "system user k3s-ha" getent passwd k3s-ha
check "system group k3s-ha" getent group k3s-ha
check "k3s-ha is a system user (uid < 1000)" bash -c '[ "$(id -u k3s-ha)" -lt 1000 ]'
check "cluster.toml is root:k3s-ha 0640" \
  bash -c '[ "$(stat -c %U:%G:%a /etc/k3s-ha/cluster.toml)" = root:k3s-ha:640 ]'
check "lbctl accepts the shipped cluster.toml" \
  bash -c '/usr/bin/lbctl config check /etc/k3s-ha/cluster.toml >/dev/null'
for u in "${UNITS[@]}"; do check "$u.service enabled (multi-user.target.wants link)" enabled_link "$u"; done
check "man pages found by man" bash -c '! command -v man >/dev/null || { man -w vrrpd && man -w lbd && man -w lbctl; } >/dev/null'
say "systemd-analyze verify (installed units)"
# Documentation=man:... is checked with man(1) when it is installed.
systemd-analyze verify /usr/lib/systemd/system/lbd.service /usr/lib/systemd/system/vrrpd.service 2>&1 |
  tee "$OUT/verify.txt"
check "systemd-analyze verify: no complaint" test ! -s "$OUT/verify.txt"
check "no daemon started by the install" test -z "$(installed_daemons)"

# --- 3b. least privilege, for real -------------------------------------------------------
# The installed daemons as user k3s-ha with exactly the capabilities their units grant
# (setpriv; this machine has no systemd to run the units), in a namespace of our own with
# its own subnet (10.148.0.0/24): vrrpd must win and add the VIP, lbd must bind port 80.
say "least privilege: vrrpd (CAP_NET_ADMIN, CAP_NET_RAW) and lbd (CAP_NET_BIND_SERVICE) as k3s-ha"
PRIV=$(mktemp -d /tmp/k3sha-pkgtest.XXXXXX)
chmod 755 "$PRIV"
NS="k3shapkg-$$"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth0 type veth peer name eth1
ip -n "$NS" addr add 10.148.0.11/24 dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set eth1 up
cat > "$PRIV/cluster.toml" <<'TOML'
[cluster]
name = "pkgtest"
domain = "pkgtest.invalid"
[vip]
address = "10.148.0.100/24"
[[nodes]]
name = "p1"
address = "10.148.0.11"
role = "server"
[[services]]
name = "web"
listen = 80
backends = ["10.148.0.11:18080"]
TOML
chgrp k3s-ha "$PRIV/cluster.toml" && chmod 0640 "$PRIV/cluster.toml"
install -d -m 0750 -o k3s-ha -g k3s-ha "$PRIV/run"
# Simple commands in the background, so $! is the daemon itself (ip and setpriv exec it).
setpriv_as() { # CAPS: the setpriv arguments that give user k3s-ha exactly these
  echo --reuid=k3s-ha --regid=k3s-ha --init-groups --no-new-privs \
    --inh-caps="-all,$1" --ambient-caps="-all,$1" --bounding-set="-all,$1"
}
# shellcheck disable=SC2046 # word splitting of setpriv_as is wanted
ip netns exec "$NS" setpriv $(setpriv_as +net_bind_service) \
  /usr/sbin/lbd --config "$PRIV/cluster.toml" --node p1 --run-dir "$PRIV/run" >"$PRIV/lbd.log" 2>&1 &
LBD_PID=$!
# shellcheck disable=SC2046
ip netns exec "$NS" setpriv $(setpriv_as +net_admin,+net_raw) \
  /usr/sbin/vrrpd --config "$PRIV/cluster.toml" --node p1 --run-dir "$PRIV/run" >"$PRIV/vrrpd.log" 2>&1 &
VRRPD_PID=$!
wait_for() { # SECONDS, then a test command
  local n=$(( $1 * 10 )); shift
  while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 0.1; n=$((n - 1)); done
  return 1
}
vip_held() { ip -n "$NS" -br addr show dev eth0 | grep -q '10\.148\.0\.100/24'; }
lbd_on_80() { ip netns exec "$NS" ss -ltnH 'sport = :80' | grep -q LISTEN; }
check "vrrpd as k3s-ha wins and adds the VIP (10 s)" wait_for 10 vip_held
check "lbd as k3s-ha listens on port 80 (5 s)" wait_for 5 lbd_on_80
check "vrrpd runs as k3s-ha" bash -c "[ \"\$(awk '/^Uid:/ {print \$2}' /proc/$VRRPD_PID/status)\" = \"\$(id -u k3s-ha)\" ]"
check "vrrpd's capabilities: NET_ADMIN + NET_RAW only" grep -q '^CapEff:[[:space:]]*0000000000003000$' "/proc/$VRRPD_PID/status"
check "lbd's capabilities: NET_BIND_SERVICE only" grep -q '^CapEff:[[:space:]]*0000000000000400$' "/proc/$LBD_PID/status"
check "control sockets 0660 k3s-ha" bash -c "[ \"\$(stat -c %a:%G '$PRIV/run/vrrpd.sock' '$PRIV/run/lbd.sock' | sort -u)\" = 660:k3s-ha ]"
check "lbctl status reads both sockets" bash -c "/usr/bin/lbctl --run-dir '$PRIV/run' status | grep -q 'VRRP master'"
kill -TERM "$VRRPD_PID" "$LBD_PID"
gone() { [ ! -e "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
both_gone() { gone "$VRRPD_PID" && gone "$LBD_PID"; }
check "both stop on SIGTERM (15 s)" wait_for 15 both_gone
wait "$VRRPD_PID" "$LBD_PID" 2>/dev/null || true
VRRPD_PID="" LBD_PID=""
check "vrrpd removed the VIP on stop" bash -c "! ip -n '$NS' -br addr show dev eth0 | grep -q 10.148.0.100"
ip netns del "$NS"
rm -rf "$PRIV"
PRIV=""

# --- 3c. the optional VRRP modes under the same privileges ----------------------------------
# virtual_mac (a macvlan, interface settings over rtnetlink), accept_mode = false (AF_PACKET
# responder with BPF filters) and the timerfd, as k3s-ha with CAP_NET_ADMIN + CAP_NET_RAW
# and /proc/sys read-only, as the unit's ProtectKernelTunables= leaves it. Subnet 10.149.0.0/24.
say "least privilege: vrrpd's virtual_mac and accept_mode = false with /proc/sys read-only"
PRIV=$(mktemp -d /tmp/k3sha-pkgtest.XXXXXX)
chmod 755 "$PRIV"
NS="k3shapkg-$$-b"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth0 type veth peer name eth1
ip -n "$NS" addr add 10.149.0.11/24 dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set eth1 up
install -d -m 0750 -o k3s-ha -g k3s-ha "$PRIV/run"
run_vrrpd_ro() { # EXTRA_VRRP_LINES: start vrrpd as k3s-ha with /proc/sys read-only
  printf '[cluster]\nname = "pkgtest"\ndomain = "pkgtest.invalid"\n[vip]\naddress = "10.149.0.100/24"\n[vrrp]\nvrid = 49\ninterval = "100ms"\n%s\n[vrrp.track]\nlbd = "off"\n[[nodes]]\nname = "p1"\naddress = "10.149.0.11"\nrole = "server"\n' "$1" > "$PRIV/cluster.toml"
  chgrp k3s-ha "$PRIV/cluster.toml" && chmod 0640 "$PRIV/cluster.toml"
  # shellcheck disable=SC2046
  ip netns exec "$NS" sh -c 'mount -o bind,ro /proc/sys /proc/sys && exec "$@"' sh \
    setpriv $(setpriv_as +net_admin,+net_raw) \
    /usr/sbin/vrrpd --config "$PRIV/cluster.toml" --node p1 --run-dir "$PRIV/run" >>"$PRIV/vrrpd.log" 2>&1 &
  VRRPD_PID=$!
}
stop_vrrpd() {
  kill -TERM "$VRRPD_PID"
  wait_for 10 gone "$VRRPD_PID"
  local rc=0; wait "$VRRPD_PID" 2>/dev/null || rc=$?
  VRRPD_PID=""
  return "$rc"
}
devconf() { ip netns exec "$NS" cat "/proc/sys/net/ipv4/conf/$1/$2"; }
vmac_vip() { ip -n "$NS" -br addr show dev vrrp4.49 2>/dev/null | grep -q '10\.149\.0\.100/32'; }
run_vrrpd_ro "virtual_mac = true"
check "virtual_mac: VIP on vrrp4.49 as k3s-ha (10 s)" wait_for 10 vmac_vip
check "virtual_mac: vrrp4.49 has MAC 00:00:5e:00:01:31" bash -c "ip -n '$NS' link show vrrp4.49 | grep -q 00:00:5e:00:01:31"
check "virtual_mac: eth0 arp_ignore 1, arp_announce 2" test "$(devconf eth0 arp_ignore)$(devconf eth0 arp_announce)" = 12
check "virtual_mac: clean exit" stop_vrrpd
check "virtual_mac: vrrp4.49 deleted" bash -c "! ip -n '$NS' link show vrrp4.49 >/dev/null 2>&1"
check "virtual_mac: eth0 settings restored to 0" test "$(devconf eth0 arp_ignore)$(devconf eth0 arp_announce)" = 00
answering() { /usr/bin/lbctl --run-dir "$PRIV/run" status --json 2>/dev/null | tr -d ' \n' | grep -q '"vips_answered":\["10.149.0.100"\]'; }
run_vrrpd_ro "accept_mode = false"
check "accept_mode = false: master answers for the VIP as k3s-ha (10 s)" wait_for 10 answering
check "accept_mode = false: VIP not added" bash -c "! ip -n '$NS' -br addr show | grep -q 10.149.0.100"
check "accept_mode = false: clean exit" stop_vrrpd
if grep -qiE 'error|permission denied|operation not permitted' "$PRIV/vrrpd.log"; then
  cat "$PRIV/vrrpd.log"; fail "vrrpd logged an error under least privilege"
else
  echo "ok: no error in vrrpd's log"
fi
ip netns del "$NS"
rm -rf "$PRIV"
PRIV=""

# --- 3d. the units under a real systemd ---------------------------------------------------
# A bookworm root filesystem booted with systemd-nspawn -b: the units as shipped, PID 1
# systemd, the journal, STATUS=, signals and a capability drop-in (packaging/test-systemd.sh).
say "real systemd: the package in a booted bookworm container"
./packaging/test-systemd.sh "$DEB1" "$DEB2" || fail "real systemd test (see above)"

# --- 4. upgrade keeping an edited conffile, with lbd running -----------------------------
# Revision 1's lbd as k3s-ha with its unit's capability, in a namespace of our own
# (10.151.0.0/24), on the package's run directory where the postinst finds it: its echo
# service (a `tcp` stand-in behind it) carries 20 held connections and a new one every
# round (packaging/test-hold.sh) while dpkg upgrades.
say "upgrade to revision 2 with lbd running: handed over to the new binary, not restarted"
[ ! -e /run/k3s-ha/lbd.sock ] || fail "/run/k3s-ha/lbd.sock exists: another lbd runs here; not touching it"
PRIV=$(mktemp -d /tmp/k3sha-pkgtest.XXXXXX)
chmod 755 "$PRIV"
NS="k3shapkg-$$-u"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth0 type veth peer name eth1
ip -n "$NS" addr add 10.151.0.11/24 dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set eth1 up
cat > "$PRIV/cluster.toml" <<'TOML'
[cluster]
name = "pkgtest"
domain = "pkgtest.invalid"
[vip]
address = "10.151.0.100/24"
[[nodes]]
name = "p1"
address = "10.151.0.11"
role = "server"
[lbd]
drain_timeout = "20s"
[[services]]
name = "echo"
listen = 8081
backends = ["10.151.0.11:18081"]
check = { kind = "tcp", interval = "200ms", fall = 1 }
TOML
chgrp k3s-ha "$PRIV/cluster.toml" && chmod 0640 "$PRIV/cluster.toml"
[ -d /run/k3s-ha ] || RUN_MADE=1
install -d -m 0750 -o k3s-ha -g k3s-ha /run/k3s-ha "$PRIV/state"
ip netns exec "$NS" /usr/bin/lbctl lab backend --node p1 --serve 18081:tcp >"$PRIV/backend.log" 2>&1 &
BACKEND_PID=$!
# shellcheck disable=SC2046 # word splitting of setpriv_as is wanted
ip netns exec "$NS" setpriv $(setpriv_as +net_bind_service) \
  /usr/sbin/lbd --config "$PRIV/cluster.toml" --node p1 --state-dir "$PRIV/state" >"$PRIV/lbd.log" 2>&1 &
LBD_PID=$!
echo_served() { ip netns exec "$NS" bash -c 'exec 3<>/dev/tcp/10.151.0.11/8081 && IFS= read -r -t 2 -u 3 l && [ "$l" = p1 ]' 2>/dev/null; }
check "revision 1's lbd serves the echo service (10 s)" wait_for 10 echo_served
HOLD_PID=""
hold_start() { # NAME
  rm -f "$PRIV/hold.stop"
  ip netns exec "$NS" bash packaging/test-hold.sh 10.151.0.11 8081 20 "$PRIV/hold.stop" \
    >"$PRIV/$1.out" 2>"$PRIV/$1.err" &
  HOLD_PID=$!
  sleep 1
}
hold_end() { # NAME: fails if anything was refused, reset or lost
  sleep 1
  touch "$PRIV/hold.stop"
  local rc=0
  wait "$HOLD_PID" || rc=$?
  HOLD_PID=""
  echo "held connections: $(cat "$PRIV/$1.out")"
  [ "$rc" = 0 ] || { cat "$PRIV/$1.err"; return 1; }
}
lbd_pids() { installed_daemons | awk '$2 == "/usr/sbin/lbd" {print $1}'; }
# The PID of the lbd that answers on /run/k3s-ha/lbd.sock (after a reinstall its binary
# is a deleted file too: lbd_pids no longer finds it).
lbd_answering() { /usr/bin/lbctl status --json 2>/dev/null | sed -n 's/^ *"pid": \([0-9]*\),*$/\1/p' | head -n 1; }

echo "# edited by the k3s-ha packaging test $$" >> /etc/k3s-ha/cluster.toml
sum_before=$(sha256sum /etc/k3s-ha/cluster.toml)
hold_start upgrade
t0=$(date +%s.%N)
dpkg -i --force-confold "$DEB2" 2>&1 | tee "$OUT/dpkg-upgrade.txt"
t1=$(date +%s.%N)
check "installed version is -2" bash -c "dpkg-query -W -f='\${Version}' k3s-ha | grep -q -- '-2$'"
check "edited conffile kept" bash -c "[ \"\$(sha256sum /etc/k3s-ha/cluster.toml)\" = '$sum_before' ]"
check "no .dpkg-new/.dpkg-dist/.dpkg-old left" bash -c '! ls /etc/k3s-ha/*.dpkg-* 2>/dev/null | grep -q .'
check "cluster.toml still root:k3s-ha 0640" \
  bash -c '[ "$(stat -c %U:%G:%a /etc/k3s-ha/cluster.toml)" = root:k3s-ha:640 ]'
for u in "${UNITS[@]}"; do check "$u.service still enabled" enabled_link "$u"; done
check "the postinst handed lbd over (lbctl upgrade lbd)" grep -q '^lbd upgraded: PID ' "$OUT/dpkg-upgrade.txt"
NEW_LBD_PID=$(lbd_pids)
check "one lbd runs the new /usr/sbin/lbd, with a new PID (was $LBD_PID)" \
  bash -c "[ -n '$NEW_LBD_PID' ] && [ '$NEW_LBD_PID' != '$LBD_PID' ] && [ \"\$(echo $NEW_LBD_PID | wc -w)\" = 1 ]"
check "the new lbd answers on /run/k3s-ha/lbd.sock" test "$(lbd_answering)" = "$NEW_LBD_PID"
check "the new lbd: user k3s-ha, NET_BIND_SERVICE only" \
  bash -c "[ \"\$(awk '/^Uid:/ {print \$2}' /proc/$NEW_LBD_PID/status)\" = \"\$(id -u k3s-ha)\" ] && grep -q '^CapEff:[[:space:]]*0000000000000400\$' /proc/$NEW_LBD_PID/status"
check "the old lbd runs the replaced (deleted) binary and drains" \
  bash -c "readlink /proc/$LBD_PID/exe | grep -q '(deleted)'"
only_the_new_lbd() { [ "$(installed_daemons | awk '{print $1}' | tr '\n' ' ')" = "$NEW_LBD_PID " ]; }
check "no other daemon started by the upgrade" only_the_new_lbd
check "held through the upgrade: nothing refused, reset or lost" hold_end upgrade
check "the old lbd exits once its connections are closed (5 s)" wait_for 5 gone "$LBD_PID"
rc=0; wait "$LBD_PID" || rc=$?
check "the old lbd exited 0" test "$rc" = 0
LBD_PID=""
echo "dpkg -i took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s; $(grep '^lbd upgraded' "$OUT/dpkg-upgrade.txt")"

say "policy-rc.d forbidding a restart of lbd.service keeps the running lbd"
prc_deny_all
dpkg -i --force-confold "$DEB2" 2>&1 | tee "$OUT/dpkg-policy.txt"
prc_allow_lbd
check "the postinst says why lbd was not handed over" grep -q 'policy-rc.d forbids restarting lbd.service' "$OUT/dpkg-policy.txt"
check "the same lbd runs ($NEW_LBD_PID)" test "$(lbd_answering)" = "$NEW_LBD_PID"

say "a new binary that cannot take over (cluster.toml made invalid) leaves lbd serving"
cp "$PRIV/cluster.toml" "$PRIV/cluster.toml.good"
sed -i 's/^name = "echo"$/name = "echo"\nbogus = 1/' "$PRIV/cluster.toml"
hold_start bad
rc=0
dpkg -i --force-confold "$DEB2" >"$OUT/dpkg-bad.txt" 2>&1 || rc=$?
cat "$OUT/dpkg-bad.txt"
check "dpkg -i still succeeds" test "$rc" = 0
check "the postinst warns that lbd was NOT upgraded, and why (the cluster.toml error)" \
  bash -c "grep -q 'lbd was NOT upgraded' '$OUT/dpkg-bad.txt' && grep -q 'bogus' '$OUT/dpkg-bad.txt'"
check "the same lbd runs ($NEW_LBD_PID)" test "$(lbd_answering)" = "$NEW_LBD_PID"
check "held meanwhile: nothing refused, reset or lost" hold_end bad
cp "$PRIV/cluster.toml.good" "$PRIV/cluster.toml"
kill -TERM "$NEW_LBD_PID"
check "the upgraded lbd stops on SIGTERM (15 s)" wait_for 15 gone "$NEW_LBD_PID"
NEW_LBD_PID=""
kill -TERM "$BACKEND_PID" 2>/dev/null || true
wait "$BACKEND_PID" 2>/dev/null || true
BACKEND_PID=""
ip netns del "$NS"
rm -rf "$PRIV"
PRIV=""
[ "$RUN_MADE" = 0 ] || { rm -rf /run/k3s-ha; RUN_MADE=0; }

# --- 5. remove, purge ---------------------------------------------------------------------
say "dpkg -r"
dpkg -r k3s-ha
for f in /usr/sbin/vrrpd /usr/sbin/lbd /usr/bin/lbctl /usr/lib/systemd/system/vrrpd.service \
         /usr/lib/systemd/system/lbd.service /usr/share/man/man8/lbctl.8.gz; do
  check "removed $f" test ! -e "$f"
done
check "conffile kept after remove" test -e /etc/k3s-ha/cluster.toml
say "dpkg -P"
dpkg -P k3s-ha
PURGED=1
check "package gone" bash -c '! dpkg-query -W -f="\${Status}" k3s-ha 2>/dev/null | grep -q installed'
check "/etc/k3s-ha gone" test ! -e /etc/k3s-ha
check "/var/lib/k3s-ha (admin states, maintenance) gone" test ! -e /var/lib/k3s-ha
for u in "${UNITS[@]}"; do
  check "no enable link for $u" test ! -e "/etc/systemd/system/multi-user.target.wants/$u.service" -a ! -L "/etc/systemd/system/multi-user.target.wants/$u.service"
  check "no mask for $u" test ! -L "/etc/systemd/system/$u.service"
  check "no deb-systemd-helper state for $u" \
    bash -c "! ls /var/lib/systemd/deb-systemd-helper-enabled/ 2>/dev/null | grep -q '^$u.service' && ! ls /var/lib/systemd/deb-systemd-helper-masked/ 2>/dev/null | grep -q '^$u.service'"
done
check "no file of the package left" bash -c '! grep -v "/$" "'"$OUT"'/contents.txt" | grep -v "^/usr/share/doc/k3s-ha$" | while read -r f; do [ -d "$f" ] || [ ! -e "$f" ] || echo "$f"; done | grep .'
echo "note: the k3s-ha system user and group stay after purge (Debian practice)"
say "package test passed"
