#!/usr/bin/env bash
# The k3s-ha .deb under a real systemd: a minimal Debian bookworm root filesystem
# (mmdebstrap, Debian's own packages) booted with `systemd-nspawn -b`, so PID 1 is systemd
# and the units run exactly as shipped (their sandboxing, capabilities, Type=notify,
# watchdog, journal). Called by packaging/test-package.sh with the .deb to test:
#
#   packaging/test-systemd.sh target/k3s-ha-package-test/k3s-ha_0.1.0-1_amd64.deb [REV2.deb]
#
# What it proves, each as a check:
#   - both units start and are active; vrrpd takes the VIP; STATUS= says so
#     (`systemctl status`), and lbd's says how many servers are up;
#   - warnings reach the journal as warnings (`journalctl -p warning`), with no colour
#     escape codes;
#   - SIGUSR1 / SIGUSR2 (systemctl kill) dump the status and kill nothing (lbd: SIGUSR1;
#     its SIGUSR2 upgrades);
#   - lbd upgrades without a restart (SIGUSR2, `lbctl upgrade lbd`): systemd takes the new
#     process as MainPID (NotifyAccess=main), the unit stays active, no restart is counted,
#     the watchdog is fed by the new process, 20 connections held through lbd lose nothing
#     and new ones are never refused; with REV2.deb, the same across `dpkg -i` of the
#     next revision (the postinst hands lbd over, restarts vrrpd);
#   - with REV2.deb, the vrrpd restart of that upgrade moves the VIP to a second node and
#     back (sd2: the same package's binaries, run in a namespace of their own), and 20
#     connections a client holds through the VIP lose nothing: the second node forwards
#     their packets to this one, which kept the VIP on lo for them (docs/handover.md);
#   - with CAP_NET_ADMIN taken away by a drop-in, vrrpd does not claim the VIP: fault in
#     STATUS=, an error in the journal, no VIP in the kernel, FAULT in `lbctl status`;
#     the drop-in removed, it holds the VIP again.
#
# Network safety: the container runs in a network namespace this script creates; its eth0
# is a veth to a bridge in a second namespace (the client, 10.150.0.50), where the second
# node's namespace is attached too (subnet 10.150.0.0/24); nothing reaches the host's
# interfaces. Root only;
# needs mmdebstrap and systemd-container (scripts/test-tools.txt) and Debian's mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB=${1:?usage: $0 PACKAGE.deb [NEXT_REVISION.deb]}
DEB=$(readlink -f "$DEB")
DEB2=${2:-}
[ -z "$DEB2" ] || DEB2=$(readlink -f "$DEB2")
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
NSB="k3shasd-$$-br"  # the bridge, and the client on it
NS2="k3shasd-$$-2"   # the second node, sd2
NSPAWN_PID=""
SD2_PIDS=""
VIP_HOLD_PID=""
cleanup() {
  local p
  for p in $SD2_PIDS $VIP_HOLD_PID; do kill -KILL "$p" 2>/dev/null || true; done
  if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    kill -TERM "$NSPAWN_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NSPAWN_PID" 2>/dev/null || true
  fi
  ip netns del "$NS" 2>/dev/null || true
  ip netns del "$NS2" 2>/dev/null || true
  ip netns del "$NSB" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say "bookworm root filesystem (mmdebstrap, minbase + systemd)"
mmdebstrap --quiet --variant=minbase \
  --include=systemd,systemd-sysv,dbus,iproute2,adduser,procps,init-system-helpers,nftables \
  bookworm "$ROOT" http://deb.debian.org/debian
echo k3sha-sd1 > "$ROOT/etc/hostname"
cp "$DEB" "$ROOT/root/k3s-ha.deb"
[ -z "$DEB2" ] || cp "$DEB2" "$ROOT/root/k3s-ha-2.deb"
cp packaging/test-hold.sh "$ROOT/root/test-hold.sh"

say "network namespaces: $NS (the container), $NSB (a bridge, the client), $NS2 (sd2); 10.150.0.0/24"
ip netns add "$NS"
ip netns add "$NSB"
ip netns add "$NS2"
for n in "$NS" "$NSB" "$NS2"; do ip -n "$n" link set lo up; done
ip -n "$NSB" link add br0 type bridge
ip -n "$NSB" addr add 10.150.0.50/24 dev br0
ip -n "$NSB" link set br0 up
ip -n "$NS" link add eth0 type veth peer name sd1p netns "$NSB"
ip -n "$NS2" link add eth0 type veth peer name sd2p netns "$NSB"
for p in sd1p sd2p; do ip -n "$NSB" link set "$p" master br0 up; done
ip -n "$NS" addr add 10.150.0.11/24 dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS2" addr add 10.150.0.12/24 dev eth0
ip -n "$NS2" link set eth0 up

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
priority = 150
# Runs only for the package upgrade below (the same package's binaries, not under systemd).
[[nodes]]
name = "sd2"
address = "10.150.0.12"
role = "server"
priority = 100
[[services]]
name = "web"
listen = 8080
backends = ["10.150.0.11:18080"]
check = { kind = "tcp", interval = "200ms", fall = 1 }
[[services]]
name = "echo"
listen = 8081
backends = ["10.150.0.11:18081"]
check = { kind = "tcp", interval = "200ms", fall = 1 }
TOML
in_ct env DEBIAN_FRONTEND=noninteractive dpkg -i /root/k3s-ha.deb >/dev/null
in_ct install -m 0640 -o root -g k3s-ha /etc/k3s-ha-test.toml /etc/k3s-ha/cluster.toml
# A stand-in backend for lbd's service (lbctl's own, as in the lab), as a transient unit.
in_ct systemd-run --quiet --unit=k3sha-standin /usr/bin/lbctl lab backend --node sd1 --http-port 18080 --serve 18081:tcp
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
# The handover's nftables rules (docs/handover.md): nft runs as vrrpd's child, inside the
# unit's sandbox and with its capabilities.
check "vrrpd wrote its nftables table (nft under the unit's sandbox)" in_ct nft list table ip k3s_ha
check "no nft error in vrrpd's journal" bash -c "! nsenter -t $LEADER -a -r -w -- journalctl --no-pager -u vrrpd -o cat | grep -q 'could not write the handover rules'"
check "systemctl status lbd says servers up per service" \
  wait_for 5 bash -c "nsenter -t $LEADER -a -r -w -- systemctl show -p StatusText --value lbd | grep -q '^web 1/1 up, echo 1/1 up; '"
echo "lbd STATUS=: $(status_text lbd)"

say "lbd upgrades under systemd: the MainPID handed over, no restart, nothing dropped"
mainpid() { in_ct systemctl show -p MainPID --value "$1"; }
nrestarts() { in_ct systemctl show -p NRestarts --value "$1"; }
gone_ct() { ! in_ct test -d "/proc/$1"; }
HOLD_PID=""
hold_start() { # NAME: 20 connections through lbd's echo service, a new one every round
  in_ct rm -f /run/hold.stop
  in_ct bash /root/test-hold.sh 10.150.0.11 8081 20 /run/hold.stop >"$WORK/$1.out" 2>"$WORK/$1.err" &
  HOLD_PID=$!
  sleep 1
}
hold_end() { # NAME: stop, print the summary; fails if anything was refused, reset or lost
  sleep 1
  in_ct touch /run/hold.stop
  local rc=0
  wait "$HOLD_PID" || rc=$?
  HOLD_PID=""
  echo "held connections: $(cat "$WORK/$1.out")"
  [ "$rc" = 0 ] || { cat "$WORK/$1.err"; return 1; }
}
upgraded_from() { # OLD_PID: systemd's MainPID is another lbd now
  local p; p=$(mainpid lbd)
  [ -n "$p" ] && [ "$p" != 0 ] && [ "$p" != "$1" ]
}
pid0=$(mainpid lbd)
restarts0=$(nrestarts lbd)
hold_start usr2
in_ct systemctl kill -s USR2 --kill-whom=main lbd
check "SIGUSR2: systemd's MainPID is a new lbd (was $pid0)" wait_for 10 upgraded_from "$pid0"
pid1=$(mainpid lbd)
check "SIGUSR2: lbd.service stays active" active lbd
check "SIGUSR2: no restart counted (NRestarts=$restarts0)" test "$(nrestarts lbd)" = "$restarts0"
check "SIGUSR2: the old lbd ($pid0) still drains the held connections" in_ct test -d "/proc/$pid0"
check "SIGUSR2: held and new connections: nothing refused, reset or lost" hold_end usr2
check "SIGUSR2: the old lbd exits once its connections are closed (5 s)" wait_for 5 gone_ct "$pid0"
hold_start lbctl
out=$(in_ct lbctl upgrade lbd 2>&1) || fail "lbctl upgrade lbd: $out"
echo "$out"
pid2=$(mainpid lbd)
check "lbctl upgrade lbd: the new PID it names is systemd's MainPID ($pid2)" \
  bash -c "[ '$pid2' != '$pid1' ] && echo '$out' | grep -q '^lbd upgraded: PID $pid2 '"
check "lbctl upgrade lbd: held and new connections: nothing refused, reset or lost" hold_end lbctl
check "lbctl upgrade lbd: the old lbd ($pid1) exits (5 s)" wait_for 5 gone_ct "$pid1"
check "the new lbd runs /usr/sbin/lbd as k3s-ha" \
  bash -c "[ \"\$(nsenter -t $LEADER -a -r -w -- stat -c %U /proc/$pid2)\" = k3s-ha ] && [ \"\$(nsenter -t $LEADER -a -r -w -- readlink /proc/$pid2/exe)\" = /usr/sbin/lbd ]"
# WatchdogSec=10s: a new main process that did not feed it would be killed by now.
sleep 11
check "11 s later: still active, same MainPID, no restart (the new process feeds the watchdog)" \
  bash -c "[ \"\$(nsenter -t $LEADER -a -r -w -- systemctl is-active lbd)\" = active ] && [ \"\$(nsenter -t $LEADER -a -r -w -- systemctl show -p MainPID --value lbd)\" = $pid2 ] && [ \"\$(nsenter -t $LEADER -a -r -w -- systemctl show -p NRestarts --value lbd)\" = $restarts0 ]"
check "systemd accepted every notification (NotifyAccess=main: none from a process not main)" \
  bash -c "! nsenter -t $LEADER -a -r -w -- journalctl --no-pager -o cat | grep -q 'reception only permitted for main PID'"
check "the upgrades are in lbd's journal at info, no error" \
  bash -c "nsenter -t $LEADER -a -r -w -- journalctl --no-pager -u lbd -o cat | grep -q 'upgrade done' && ! nsenter -t $LEADER -a -r -w -- journalctl --no-pager -u lbd -p err -o cat | grep -q ."
echo "systemd on the handover:"
in_ct journalctl --no-pager -u lbd -o cat | grep -iE 'main pid|supervising' | tail -n 4 || true

if [ -n "$DEB2" ]; then
  say "package upgrade to the next revision with lbd running: lbd handed over, vrrpd restarted"
  # The second node, sd2: revision 1's binaries from the package, as root in its own
  # namespace (not under systemd: one container is enough to prove the units), the same
  # cluster.toml. Backup at priority 100 below sd1's 150.
  say "second node sd2 (backup), and a client holding connections through the VIP"
  dpkg-deb -x "$DEB" "$WORK/sd2"
  mkdir -p "$WORK/sd2/run" "$WORK/sd2/state"
  cp "$ROOT/etc/k3s-ha-test.toml" "$WORK/sd2/cluster.toml"
  for d in lbd vrrpd; do
    ip netns exec "$NS2" "$WORK/sd2/usr/sbin/$d" --config "$WORK/sd2/cluster.toml" --node sd2 \
      --run-dir "$WORK/sd2/run" --state-dir "$WORK/sd2/state" >"$WORK/sd2/$d.log" 2>&1 &
    SD2_PIDS="$SD2_PIDS $!"
  done
  sd2_log() { cat "$WORK/sd2/vrrpd.log"; }
  sd2_was() { grep -Eq "vrrp state changed.*to=\"?$1" "$WORK/sd2/vrrpd.log"; }
  check "sd2 runs as backup (10 s)" wait_for 10 sd2_was backup
  check "sd1 still holds the VIP" vip_held
  check "sd2 does not" bash -c "! ip -n '$NS2' -br addr show dev eth0 | grep -q 10.150.0.100"
  # 20 connections from the client through the VIP, and a new one every round (sd1 serves
  # them now; after the handover sd2 forwards their packets to sd1).
  rm -f "$WORK/vip.stop"
  ip netns exec "$NSB" bash packaging/test-hold.sh 10.150.0.100 8081 20 "$WORK/vip.stop" \
    >"$WORK/vip.out" 2>"$WORK/vip.err" &
  VIP_HOLD_PID=$!

  say "package upgrade to the next revision with lbd running: lbd handed over, vrrpd restarted"
  pid0=$(mainpid lbd)
  vpid0=$(mainpid vrrpd)
  hold_start dpkg
  in_ct env DEBIAN_FRONTEND=noninteractive dpkg -i /root/k3s-ha-2.deb >"$WORK/dpkg2.out" 2>&1 ||
    { cat "$WORK/dpkg2.out"; fail "dpkg -i (revision 2)"; }
  cat "$WORK/dpkg2.out"
  check "dpkg -i: held and new connections: nothing refused, reset or lost" hold_end dpkg
  check "revision 2 installed" bash -c "nsenter -t $LEADER -a -r -w -- dpkg-query -W -f='\${Version}' k3s-ha | grep -q -- '-2\$'"
  check "the postinst upgraded lbd (lbctl upgrade lbd)" grep -q '^lbd upgraded: PID ' "$WORK/dpkg2.out"
  check "lbd: a new MainPID (was $pid0), active, no restart counted" \
    bash -c "[ \"\$(nsenter -t $LEADER -a -r -w -- systemctl show -p MainPID --value lbd)\" != $pid0 ] && [ \"\$(nsenter -t $LEADER -a -r -w -- systemctl is-active lbd)\" = active ] && [ \"\$(nsenter -t $LEADER -a -r -w -- systemctl show -p NRestarts --value lbd)\" = $restarts0 ]"
  check "vrrpd restarted (MainPID was $vpid0)" bash -c "[ \"\$(nsenter -t $LEADER -a -r -w -- systemctl show -p MainPID --value vrrpd)\" != $vpid0 ]"
  check "vrrpd active again and holds the VIP" wait_for 10 vip_held

  say "the vrrpd restart moved the VIP to sd2 and back; the client's connections went on"
  check "sd2 took the VIP when sd1's vrrpd stopped" sd2_was master
  check "sd2 forwarded the connections that began on sd1 to sd1" \
    grep -q 'forwarding the connections that did not begin here to the node that served them.*10.150.0.11' "$WORK/sd2/vrrpd.log"
  check "sd1 (the new vrrpd) took the VIP back: sd2 is backup again" \
    bash -c "grep -E 'vrrp state changed' '$WORK/sd2/vrrpd.log' | tail -n 1 | grep -Eq 'to=\"?backup'"
  sleep 1
  touch "$WORK/vip.stop"
  rc=0; wait "$VIP_HOLD_PID" || rc=$?
  VIP_HOLD_PID=""
  echo "connections through the VIP: $(cat "$WORK/vip.out")"
  check "the 20 connections through the VIP, and the new ones: nothing refused, reset or lost" \
    bash -c "[ $rc = 0 ] || { cat '$WORK/vip.err'; false; }"
  # (The old lbd served the client's connections to their end: it exits now.)
  check "the old lbd ($pid0) exits once they are closed (5 s)" wait_for 5 gone_ct "$pid0"
  # sd2 (preempted) forwards until sd1 has no flow left that began elsewhere: now that the
  # client closed them. Its last line says how many packets went.
  sd2_forwarded() { grep 'forwarding to the previous holders ended' "$WORK/sd2/vrrpd.log" | grep -Eo 'packets_forwarded=Some\([0-9]+\)' | grep -Eo '[0-9]+' | tail -n 1; }
  check "sd2's forwarding ended (10 s)" wait_for 10 bash -c "grep -q 'forwarding to the previous holders ended' '$WORK/sd2/vrrpd.log'"
  fwd=$(sd2_forwarded || true)
  echo "packets sd2 forwarded to sd1 while it held the VIP: ${fwd:-?}"
  check "...and it forwarded packets of the held connections (not 0)" bash -c "[ -n '$fwd' ] && [ '$fwd' -gt 0 ]"
  for p in $SD2_PIDS; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $SD2_PIDS; do wait "$p" 2>/dev/null || true; done
  SD2_PIDS=""
  check "sd1 holds the VIP" wait_for 10 vip_held
fi

say "journal: priorities, no escape codes"
# The stand-in goes away: lbd logs a warning (a server that was UP went DOWN).
in_ct systemctl stop k3sha-standin
check "systemctl status lbd follows: 0/1 up" \
  wait_for 5 bash -c "nsenter -t $LEADER -a -r -w -- systemctl show -p StatusText --value lbd | grep -q '^web 0/1 up, echo 0/1 up; '"
warn_seen() { in_ct journalctl --no-pager -u lbd -p warning -o cat | grep -q 'server DOWN'; }
check "lbd's 'server DOWN' is in journalctl -p warning" wait_for 5 warn_seen
check "lbd's info lines are not warnings" bash -c "! nsenter -t $LEADER -a -r -w -- journalctl --no-pager -u lbd -p warning -o cat | grep -q 'lbd ready'"
check "no colour escape codes in the journal" bash -c "! nsenter -t $LEADER -a -r -w -- journalctl --no-pager -u lbd -u vrrpd -o cat | grep -q $'\x1b'"
check "journal fields: SYSLOG_IDENTIFIER=vrrpd" bash -c "nsenter -t $LEADER -a -r -w -- journalctl --no-pager SYSLOG_IDENTIFIER=vrrpd -o cat | grep -q 'vrrp state changed'"

say "dump signals"
for sig in USR1 USR2; do
  in_ct rm -f /run/k3s-ha/vrrpd.status.json /run/k3s-ha/lbd.status.json
  # (lbd's SIGUSR2 upgrades: above.)
  if [ "$sig" = USR1 ]; then who="vrrpd lbd"; else who=vrrpd; fi
  # shellcheck disable=SC2086 # one unit or two
  in_ct systemctl kill -s "$sig" --kill-whom=main $who
  check "SIG$sig: vrrpd still active" bash -c "sleep 0.5; [ \"\$(nsenter -t $LEADER -a -r -w -- systemctl is-active vrrpd)\" = active ]"
  check "SIG$sig: lbd still active" active lbd
  check "SIG$sig: vrrpd.status.json written" in_ct test -s /run/k3s-ha/vrrpd.status.json
  if [ "$sig" = USR1 ]; then
    check "SIG$sig: lbd.status.json written" in_ct test -s /run/k3s-ha/lbd.status.json
  fi
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
check "...and parked it on lo for its connections, hidden from ARP" bash -c "nsenter -t $LEADER -a -r -w -- ip -br addr show dev lo | grep -q 10.150.0.100 && nsenter -t $LEADER -a -r -w -- nft list table arp k3s_ha >/dev/null"
say "real systemd test passed"
