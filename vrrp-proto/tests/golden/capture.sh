#!/bin/bash
# Capture real keepalived adverts inside throwaway namespaces (never the host's interfaces).
# usage: capture.sh NAME FAMILY(4|6) 'keepalived instance body' 'global extra'
set -u
NAME=$1; FAM=$2; BODY=$3; GLOBAL=${4:-}
P=vg$$; A=${P}a; B=${P}b; D=/tmp/golden/run-$NAME
rm -rf $D; mkdir -p $D
cleanup() { [ -f $D/k.pid ] && kill $(cat $D/k.pid) 2>/dev/null; sleep 0.3; ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; }
trap cleanup EXIT
ip netns add $A; ip netns add $B
ip link add ${P}0 netns $A type veth peer name ${P}1 netns $B
ip -n $A link set lo up; ip -n $B link set lo up
ip netns exec $A sysctl -qw net.ipv6.conf.${P}0.accept_dad=0
ip netns exec $B sysctl -qw net.ipv6.conf.${P}1.accept_dad=0
ip -n $A link set ${P}0 address 02:00:00:00:0a:01
ip -n $B link set ${P}1 address 02:00:00:00:0b:01
ip -n $A addr add 10.213.7.11/24 dev ${P}0
ip -n $B addr add 10.213.7.12/24 dev ${P}1
ip -n $A link set ${P}0 up; ip -n $B link set ${P}1 up
cat > $D/k.conf <<EOC
global_defs {
  router_id golden
  $GLOBAL
}
vrrp_instance VI_1 {
  interface ${P}0
  $BODY
}
EOC
sed -i "s/IFACE/${P}0/g" $D/k.conf
ip netns exec $B timeout 12 tcpdump -i ${P}1 -c 2 -w $D/cap.pcap 'ip proto 112 or ip6 proto 112' >/dev/null 2>&1 &
TD=$!
sleep 0.5
ip netns exec $A keepalived -n -l -D --vrrp -f $D/k.conf -p $D/kd.pid -r $D/v.pid > $D/k.log 2>&1 &
echo $! > $D/k.pid
wait $TD
tcpdump -r $D/cap.pcap -xx -nn 2>/dev/null > $D/cap.txt
cat $D/cap.txt
