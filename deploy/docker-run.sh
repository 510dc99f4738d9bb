#!/usr/bin/env bash
# Runs the rulehost image on this node with exactly the host access the DaemonSet in
# deploy/kubernetes/ grants, and prints findings on stdout:
#
#   deploy/docker-run.sh [docker run options...] [-- rulehost run options...]
#
# - the host's pid namespace and cgroup namespace (processes and cgroup paths as the
#   node sees them), the cgroup tree and tracefs read-only;
# - capabilities: all dropped, then SYS_ADMIN (bpf() and perf_event_open here: this
#   Docker does not know the CAP_BPF/CAP_PERFMON names; where Docker knows them and
#   the kernel is 5.8 or later, BPF, PERFMON and NET_ADMIN replace it, as in the
#   DaemonSet) and SYS_PTRACE (reading other processes' /proc environ and cgroup at
#   the start-up sweep);
# - the container runtimes' sockets that exist (metadata lookups), read-only where the
#   API allows;
# - a state directory (rule state and the compile cache) at $RULEHOST_STATE_DIR
#   (default /var/lib/rulehost), and NODE_NAME (default: this host's name).
#
# Environment: RULEHOST_IMAGE (default rulehost:dev), RULEHOST_STATE_DIR, NODE_NAME,
# RULEHOST_CONFIG (a config file to mount at /etc/rulehost/config.yaml), DOCKER_HOST
# (a unix:// daemon socket: also the socket the agent asks for metadata).
set -euo pipefail

IMAGE=${RULEHOST_IMAGE:-rulehost:dev}
STATE_DIR=${RULEHOST_STATE_DIR:-/var/lib/rulehost}
NODE=${NODE_NAME:-$(cat /proc/sys/kernel/hostname)}

docker_options=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  docker_options+=("$1")
  shift
done
[ "${1:-}" = "--" ] && shift

mkdir -p "$STATE_DIR"
args=(
  --pid host --cgroupns host
  --cap-drop ALL --cap-add SYS_ADMIN --cap-add SYS_PTRACE
  --security-opt no-new-privileges
  -v /sys/fs/cgroup:/sys/fs/cgroup:ro
  -v /sys/kernel/tracing:/sys/kernel/tracing:ro
  -v "$STATE_DIR:/var/lib/rulehost"
  -e "NODE_NAME=$NODE"
)
docker_socket=/var/run/docker.sock
case "${DOCKER_HOST:-}" in
  unix://*) docker_socket=${DOCKER_HOST#unix://} ;;
esac
[ -S "$docker_socket" ] && args+=(-v "$docker_socket:/var/run/docker.sock")
for socket in /run/containerd/containerd.sock /run/crio/crio.sock /run/k3s/containerd/containerd.sock; do
  [ -S "$socket" ] && args+=(-v "$socket:$socket")
done
run=(run --rules /etc/rulehost/rules --state-dir /var/lib/rulehost --cache-dir /var/lib/rulehost/cache)
if [ -n "${RULEHOST_CONFIG:-}" ]; then
  args+=(-v "$(realpath "$RULEHOST_CONFIG"):/etc/rulehost/config.yaml:ro")
  run+=(--config /etc/rulehost/config.yaml)
fi
exec docker run "${args[@]}" "${docker_options[@]}" "$IMAGE" "${run[@]}" "$@"
