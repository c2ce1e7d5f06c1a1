#!/usr/bin/env bash
# Connections through lbd that must survive an upgrade, for test-package.sh and
# test-systemd.sh (bash only: it runs inside a minimal container too).
#
#   test-hold.sh HOST PORT N STOPFILE
#
# HOST:PORT is an lbd service whose backend is a `tcp` stand-in (`lbctl lab backend
# --serve PORT:tcp`: the node's name on a line, then an echo). Opens N connections and,
# every 50 ms until STOPFILE exists, sends a numbered line on each and reads it back
# (every byte compared), and opens one new connection (name line, one echo, close). Then
# closes the held connections and prints one summary line:
#
#   held=20 rounds=84 bytes=123456 new_ok=84 new_failed=0 faults=0
#
# Exit 0 only when nothing failed: no connection refused or reset, no line lost or
# changed, on the held connections and the new ones.
set -u
trap '' PIPE
HOST=$1 PORT=$2 N=$3 STOP=$4
faults=0 new_ok=0 new_failed=0 bytes=0 rounds=0
fault() { faults=$((faults + 1)); echo "fault: $*" >&2; }

FD=()
for i in $(seq 1 "$N"); do
  if ! exec {fd}<>"/dev/tcp/$HOST/$PORT"; then
    fault "held $i: connect failed"
    continue
  fi
  if ! IFS= read -r -t 5 -u "$fd" name || [ -z "$name" ]; then
    fault "held $i: no name line"
    continue
  fi
  FD[i]=$fd
done

pad=$(printf '%0200d' 0)
round() {
  local i fd line want
  for i in "${!FD[@]}"; do
    fd=${FD[i]}
    want="held $i round $rounds $pad"
    if ! printf '%s\n' "$want" >&"$fd"; then
      fault "held $i round $rounds: write failed"; unset "FD[$i]"; continue
    fi
    if ! IFS= read -r -t 5 -u "$fd" line; then
      fault "held $i round $rounds: read failed (reset or closed)"; unset "FD[$i]"; continue
    fi
    if [ "$line" != "$want" ]; then
      fault "held $i round $rounds: got ${line:0:40}..."; unset "FD[$i]"; continue
    fi
    bytes=$((bytes + ${#want} + 1))
  done
  # One new connection.
  # (The group's 2>/dev/null is temporary; an exec's own redirections are not.)
  if { exec {nfd}<>"/dev/tcp/$HOST/$PORT"; } 2>/dev/null; then
    if IFS= read -r -t 5 -u "$nfd" line && printf 'new %s\n' "$rounds" >&"$nfd" &&
       IFS= read -r -t 5 -u "$nfd" line && [ "$line" = "new $rounds" ]; then
      new_ok=$((new_ok + 1))
    else
      new_failed=$((new_failed + 1)); echo "new connection $rounds: no echo" >&2
    fi
    exec {nfd}>&-
  else
    new_failed=$((new_failed + 1)); echo "new connection $rounds: refused" >&2
  fi
  rounds=$((rounds + 1))
}

# Bounded: 10 minutes at most, even if nobody creates STOPFILE (counted as a fault).
deadline=$((SECONDS + 600))
while [ ! -e "$STOP" ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then fault "no STOPFILE after 600 s"; break; fi
  round
  sleep 0.05
done
round
held=${#FD[@]}
for i in "${!FD[@]}"; do fd=${FD[i]}; exec {fd}>&-; done
echo "held=$held rounds=$rounds bytes=$bytes new_ok=$new_ok new_failed=$new_failed faults=$faults"
[ "$faults" = 0 ] && [ "$new_failed" = 0 ] && [ "$held" = "$N" ]
