#!/usr/bin/env bash
# The overlay scenario on the three boxes (run from vagrant/ after `vagrant up`): an overlay,
# a sandbox per box, pings across by address and by name, the MTU edge, cleanup.
set -euo pipefail
cd "$(dirname "$0")"

on() { local box=$1; shift; vagrant ssh "$box" -c "sudo $*" -- -q; }
fail() { echo "FAIL: $*" >&2; exit 1; }

on lb1 lowbridge network create -d overlay --attachable vnet
on lb1 lowbridge run -d --name s1 --network vnet -- sleep infinity
on lb2 lowbridge run -d --name s2 --network vnet -- sleep infinity
on lb3 lowbridge run -d --name s3 --network vnet -- sleep infinity
sleep 1   # the agents apply remote endpoints within milliseconds; be generous on slow boxes

ip_of() { on "$1" lowbridge inspect "$2" | python3 -c \
  'import json,sys; print(json.load(sys.stdin)[0]["NetworkSettings"]["Networks"]["vnet"]["IPAddress"])'; }
s2=$(ip_of lb2 s2); s3=$(ip_of lb3 s3)

on lb1 lowbridge exec s1 -- ping -c1 -w3 "$s2" >/dev/null || fail "s1 -> s2 by address"
on lb1 lowbridge exec s1 -- ping -c1 -w3 s3 >/dev/null || fail "s1 -> s3 by name"
on lb3 lowbridge exec s3 -- ping -c1 -w3 s2.vnet >/dev/null || fail "s3 -> s2.vnet"
on lb1 lowbridge exec s1 -- ping -c1 -w3 -M do -s 1422 "$s3" >/dev/null || fail "1422-byte DF ping"
if on lb1 lowbridge exec s1 -- ping -c1 -w2 -M do -s 1472 "$s3" >/dev/null 2>&1; then
  fail "a 1472-byte DF ping should not fit the overlay's MTU 1450"
fi
on lb2 lowbridge network inspect vnet | grep -q '"Peers"' || fail "inspect lists no peers"

on lb1 lowbridge rm -f s1; on lb2 lowbridge rm -f s2; on lb3 lowbridge rm -f s3
on lb1 lowbridge network rm vnet
echo "scenario passed"
