#!/usr/bin/env bash
# Makes sure a Docker Engine answers on the default socket: starts Debian's dockerd in
# the background (this machine's settings: no iptables, no bridge, vfs storage) when
# none does, as a machine without systemd needs. Waits until it answers, at most 60 s.
set -euo pipefail
docker version >/dev/null 2>&1 && exit 0
if [ ! -e /etc/docker/daemon.json ]; then
  mkdir -p /etc/docker
  echo '{"iptables": false, "bridge": "none", "storage-driver": "vfs"}' > /etc/docker/daemon.json
fi
setsid dockerd >/var/log/rulehost-dockerd.log 2>&1 < /dev/null &
for _ in $(seq 600); do
  docker version >/dev/null 2>&1 && exit 0
  sleep 0.1
done
echo "dockerd did not answer within 60 s; see /var/log/rulehost-dockerd.log" >&2
exit 1
