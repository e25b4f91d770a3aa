#!/usr/bin/env bash
# Provision one box: lowbridge in /opt/lowbridge (its own scripts/setup), the cluster store in
# /etc/lowbridge/lowbridge.conf, the agent as a systemd service; etcd on the first box only.
# usage: provision.sh NAME IP ETCD_IP   (run as root by Vagrant)
set -euo pipefail
name=$1 ip=$2 etcd_ip=$3

cd /opt/lowbridge
scripts/setup                                   # apt packages (incl. etcd-server) + .venv
ln -sf /opt/lowbridge/.venv/bin/lowbridge /usr/local/bin/lowbridge

if [ "$ip" = "$etcd_ip" ]; then
  # Debian's etcd reads /etc/default/etcd; listen on the private network too.
  cat > /etc/default/etcd <<CONF
ETCD_NAME=$name
ETCD_LISTEN_CLIENT_URLS=http://$ip:2379,http://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=http://$ip:2379
CONF
  systemctl restart etcd
  systemctl enable etcd
else
  systemctl disable --now etcd 2>/dev/null || true   # the package starts one; not needed here
fi

mkdir -p /etc/lowbridge
cat > /etc/lowbridge/lowbridge.conf <<CONF
[lowbridge]
store = etcd://$etcd_ip:2379
# The VXLAN endpoint: the private network's address (eth0 is Vagrant's NAT, the same on all).
vtep = $ip
CONF

install -m 0644 systemd/lowbridge-agent.service /etc/systemd/system/lowbridge-agent.service
systemctl daemon-reload
systemctl enable lowbridge-agent
# The first box's etcd may still be starting when the others provision: the agent retries.
systemctl restart lowbridge-agent
echo "$name: lowbridge $(lowbridge --help >/dev/null && echo ready), store etcd://$etcd_ip:2379"
