#!/usr/bin/env bash
# The k3s-ha .deb under a real systemd: a minimal Debian bookworm root filesystem
# (mmdebstrap, Debian's own packages) booted with `systemd-nspawn -b`, so PID 1 is systemd
# and the units run exactly as shipped (their sandboxing, capabilities, Type=notify,
# watchdog, journal). Called by packaging/test-package.sh with the .deb to test:
#
#   packaging/test-systemd.sh target/k3s-ha-package-test/k3s-ha_0.1.0-1_amd64.deb
#
# What it proves, each as a check:
#   - both units start and are active; vrrpd takes the VIP; STATUS= says so
#     (`systemctl status`), and lbd's says how many servers are up;
#   - warnings reach the journal as warnings (`journalctl -p warning`), with no colour
#     escape codes;
#   - SIGUSR1 / SIGUSR2 (systemctl kill) dump the status and kill nothing;
#   - with CAP_NET_ADMIN taken away by a drop-in, vrrpd does not claim the VIP: fault in
#     STATUS=, an error in the journal, no VIP in the kernel, FAULT in `lbctl status`;
#     the drop-in removed, it holds the VIP again.
#
# Network safety: the container runs in a network namespace this script creates (a veth
# pair inside it, subnet 10.150.0.0/24); nothing reaches the host's interfaces. Root only;
# needs mmdebstrap and systemd-container (scripts/test-tools.txt) and Debian's mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB=${1:?usage: $0 PACKAGE.deb}
DEB=$(readlink -f "$DEB")
say() { printf '\n==> systemd: %s\n' "$*"; }
fail() {
  printf 'FAIL (systemd): %s\n' "$*" >&2
  dump_journal
  [ -s "${WORK:-}/console.log" ] && { echo "--- the container's console:"; tail -n 40 "$WORK/console.log"; }
  exit 1
}
check() { local what=$1; shift; if "$@"; then echo "ok: $what"; else fail "$what"; fi; }

[ "$(id -u)" -eq 0 ] || { echo "FAIL (systemd): needs root (nspawn, namespaces)" >&2; exit 1; }
for p in mmdebstrap systemd-nspawn nsenter; do
  command -v "$p" >/dev/null || { echo "FAIL (systemd): $p is missing (scripts/test.sh installs it)" >&2; exit 1; }
done

WORK=$(mktemp -d /var/tmp/k3sha-systemd.XXXXXX)
ROOT="$WORK/root"
NS="k3shasd-$$"
NSPAWN_PID=""
cleanup() {
  if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    kill -TERM "$NSPAWN_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NSPAWN_PID" 2>/dev/null || true
  fi
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say "bookworm root filesystem (mmdebstrap, minbase + systemd)"
mmdebstrap --quiet --variant=minbase \
  --include=systemd,systemd-sysv,dbus,iproute2,adduser,procps,init-system-helpers,nftables \
  bookworm "$ROOT" http://deb.debian.org/debian
echo k3sha-sd1 > "$ROOT/etc/hostname"
cp "$DEB" "$ROOT/root/k3s-ha.deb"

say "network namespace $NS (veth pair inside it, 10.150.0.0/24)"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth0 type veth peer name eth1
ip -n "$NS" addr add 10.150.0.11/24 dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set eth1 up

say "boot (systemd-nspawn -b)"
systemd-nspawn -D "$ROOT" -b -q --register=no --keep-unit --console=pipe \
  --capability=CAP_NET_ADMIN,CAP_NET_RAW \
  --network-namespace-path="/run/netns/$NS" </dev/null >"$WORK/console.log" 2>&1 &
NSPAWN_PID=$!
# (nspawn keeps CAP_NET_ADMIN only with a private network of its own; the namespace here is
# ours, so it is granted explicitly.)
# The container's PID 1: the systemd process whose ancestor is nspawn.
leader() {
  local p
  for p in $(pgrep -x systemd); do
    local q=$p
    while [ "$q" -gt 1 ]; do
      q=$(awk '/^PPid:/ {print $2}' "/proc/$q/status" 2>/dev/null || echo 1)
      [ "$q" = "$NSPAWN_PID" ] && { echo "$p"; return 0; }
    done
  done
  return 1
}
LEADER=""
for _ in $(seq 1 100); do LEADER=$(leader || true); [ -n "$LEADER" ] && break; sleep 0.1; done
[ -n "$LEADER" ] || { cat "$WORK/console.log"; fail "the container's systemd did not start"; }
# -r -w: the container's root and working directory too. Entering its mount namespace alone
# puts a process at that namespace's first root, which is the host's / when this script
# itself runs in a chroot (as on scripts/fresh-machine.sh's fresh machine).
in_ct() { nsenter -t "$LEADER" -a -r -w -- "$@"; }
dump_journal() {
  [ -n "${LEADER:-}" ] && in_ct journalctl --no-pager -n 80 -u vrrpd -u lbd 2>/dev/null || true
}
state=""
for _ in $(seq 1 300); do
  state=$(in_ct systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 0.1
done
check "container booted with systemd as PID 1 ($state)" test "$(in_ct cat /proc/1/comm)" = systemd
check "system is running (not starting)" bash -c "case '$state' in running|degraded) true ;; *) false ;; esac"

say "install the package and start the units"
cat > "$ROOT/etc/k3s-ha-test.toml" <<'TOML'
[cluster]
name = "sdtest"
domain = "sdtest.invalid"
[vip]
address = "10.150.0.100/24"
[vrrp]
interval = "200ms"
[vrrp.track]
lbd = "off"
[[nodes]]
name = "sd1"
address = "10.150.0.11"
role = "server"
[[services]]
name = "web"
listen = 8080
backends = ["10.150.0.11:18080"]
check = { kind = "tcp", interval = "200ms", fall = 1 }
TOML
in_ct env DEBIAN_FRONTEND=noninteractive dpkg -i /root/k3s-ha.deb >/dev/null
in_ct install -m 0640 -o root -g k3s-ha /etc/k3s-ha-test.toml /etc/k3s-ha/cluster.toml
# A stand-in backend for lbd's service (lbctl's own, as in the lab), as a transient unit.
in_ct systemd-run --quiet --unit=k3sha-standin /usr/bin/lbctl lab backend --node sd1 --http-port 18080
in_ct systemctl start lbd vrrpd
active() { [ "$(in_ct systemctl is-active "$1")" = active ]; }
wait_for() { local n=$(( $1 * 10 )); shift; while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 0.1; n=$((n - 1)); done; return 1; }
status_text() { in_ct systemctl show -p StatusText --value "$1"; }
vip_held() { in_ct ip -br addr show dev eth0 | grep -q '10\.150\.0\.100/24'; }
check "lbd.service is active" wait_for 10 active lbd
check "vrrpd.service is active" wait_for 10 active vrrpd
check "vrrpd holds the VIP (kernel)" wait_for 10 vip_held
check "systemctl status vrrpd says master and who holds the VIP" \
  wait_for 5 bash -c "[ \"\$(nsenter -t $LEADER -a -r -w -- systemctl show -p StatusText --value vrrpd)\" = 'master, VIP 10.150.0.100 held here' ]"
echo "vrrpd STATUS=: $(status_text vrrpd)"
check "systemctl status lbd says servers up per service" \
  wait_for 5 bash -c "nsenter -t $LEADER -a -r -w -- systemctl show -p StatusText --value lbd | grep -q '^web 1/1 up; '"
echo "lbd STATUS=: $(status_text lbd)"

say "journal: priorities, no escape codes"
# The stand-in goes away: lbd logs a warning (a server that was UP went DOWN).
in_ct systemctl stop k3sha-standin
check "systemctl status lbd follows: 0/1 up" \
  wait_for 5 bash -c "nsenter -t $LEADER -a -r -w -- systemctl show -p StatusText --value lbd | grep -q '^web 0/1 up; '"
warn_seen() { in_ct journalctl --no-pager -u lbd -p warning -o cat | grep -q 'server DOWN'; }
check "lbd's 'server DOWN' is in journalctl -p warning" wait_for 5 warn_seen
check "lbd's info lines are not warnings" bash -c "! nsenter -t $LEADER -a -r -w -- journalctl --no-pager -u lbd -p warning -o cat | grep -q 'lbd ready'"
check "no colour escape codes in the journal" bash -c "! nsenter -t $LEADER -a -r -w -- journalctl --no-pager -u lbd -u vrrpd -o cat | grep -q $'\x1b'"
check "journal fields: SYSLOG_IDENTIFIER=vrrpd" bash -c "nsenter -t $LEADER -a -r -w -- journalctl --no-pager SYSLOG_IDENTIFIER=vrrpd -o cat | grep -q 'vrrp state changed'"

say "dump signals"
for sig in USR1 USR2; do
  in_ct rm -f /run/k3s-ha/vrrpd.status.json /run/k3s-ha/lbd.status.json
  in_ct systemctl kill -s "$sig" --kill-whom=main vrrpd lbd
  check "SIG$sig: vrrpd still active" bash -c "sleep 0.5; [ \"\$(nsenter -t $LEADER -a -r -w -- systemctl is-active vrrpd)\" = active ]"
  check "SIG$sig: lbd still active" active lbd
  check "SIG$sig: vrrpd.status.json written" in_ct test -s /run/k3s-ha/vrrpd.status.json
  check "SIG$sig: lbd.status.json written" in_ct test -s /run/k3s-ha/lbd.status.json
done
check "the VIP stayed" vip_held

say "vrrpd without CAP_NET_ADMIN (a drop-in takes it away)"
in_ct mkdir -p /etc/systemd/system/vrrpd.service.d
# (Capability lines merge; an empty assignment resets the ambient set, ~ removes from the
# bounding set.)
printf '[Service]\nCapabilityBoundingSet=~CAP_NET_ADMIN\nAmbientCapabilities=\nAmbientCapabilities=CAP_NET_RAW\n' \
  > "$ROOT/etc/systemd/system/vrrpd.service.d/no-net-admin.conf"
in_ct systemctl daemon-reload
in_ct systemctl restart vrrpd
check "vrrpd runs without CAP_NET_ADMIN" bash -c "sleep 0.3; nsenter -t $LEADER -a -r -w -- sh -c 'grep -q \"^CapEff:[[:space:]]*0000000000002000\$\" /proc/\$(systemctl show -p MainPID --value vrrpd)/status'"
check "vrrpd.service stays active" wait_for 5 active vrrpd
faulted() { status_text vrrpd | grep -q '^fault: VIP 10.150.0.100 not held: could not add the VIP 10.150.0.100/24 to eth0: .*Operation not permitted.*CAP_NET_ADMIN'; }
wait_for 5 faulted || echo "vrrpd STATUS=: $(status_text vrrpd)"
check "STATUS= says fault and what is missing" faulted
echo "vrrpd STATUS=: $(status_text vrrpd)"
check "no VIP in the kernel" bash -c "! nsenter -t $LEADER -a -r -w -- ip -br addr show dev eth0 | grep -q 10.150.0.100"
check "the error is in journalctl -p err" bash -c "nsenter -t $LEADER -a -r -w -- journalctl --no-pager -u vrrpd -p err -o cat | grep -q 'could not add the VIP 10.150.0.100/24'"
check "lbctl status says FAULT, not held here" bash -c "out=\$(nsenter -t $LEADER -a -r -w -- lbctl status || true); echo \"\$out\" | grep -q 'FAULT: could not add the VIP' && ! echo \"\$out\" | grep -q 'held here'"
in_ct rm -f /etc/systemd/system/vrrpd.service.d/no-net-admin.conf
in_ct systemctl daemon-reload
in_ct systemctl restart vrrpd
check "with the capability back, vrrpd holds the VIP again" wait_for 10 vip_held

say "state across restarts (StateDirectory=k3s-ha under ProtectSystem=strict)"
in_ct lbctl drain web/10.150.0.11:18080 >/dev/null
check "lbctl drain wrote /var/lib/k3s-ha/admin.json" in_ct test -s /var/lib/k3s-ha/admin.json
in_ct lbctl maintenance on >/dev/null || true
check "lbctl maintenance on wrote /var/lib/k3s-ha/maintenance" in_ct test -e /var/lib/k3s-ha/maintenance
check "owned by k3s-ha" bash -c "[ \"\$(nsenter -t $LEADER -a -r -w -- stat -c %U /var/lib/k3s-ha/admin.json)\" = k3s-ha ]"
in_ct systemctl restart lbd vrrpd
check "lbd.service is active again" wait_for 10 active lbd
drained() { in_ct lbctl status 2>/dev/null | grep -Eq '^web .*DRAIN'; }
check "the drain holds after restarting lbd" wait_for 10 drained
in_maint() { in_ct lbctl status 2>/dev/null | grep -q 'MAINTENANCE on'; }
check "maintenance holds after restarting vrrpd" wait_for 10 in_maint
in_ct lbctl maintenance off >/dev/null
in_ct lbctl enable web/10.150.0.11:18080 >/dev/null
check "maintenance off removes the file" in_ct test ! -e /var/lib/k3s-ha/maintenance
check "vrrpd holds the VIP again" wait_for 10 vip_held

say "stop"
in_ct systemctl stop vrrpd lbd
check "vrrpd removed the VIP on stop" bash -c "! nsenter -t $LEADER -a -r -w -- ip -br addr show dev eth0 | grep -q 10.150.0.100"
say "real systemd test passed"
