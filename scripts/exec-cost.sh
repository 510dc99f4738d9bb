#!/bin/bash
# What the kernel programs cost per fork+exec, for one or more rulehost binaries
# side by side (issue 26, goal 2): each binary in turn runs `rulehost run`, and
# ITERATIONS posix_spawns of /bin/true with a 6-entry env (one of them the
# KUBERNETES_SERVICE_HOST the built-in rule asks for) run in a container-like cgroup
# with the kernel's BPF statistics on; ROUNDS rounds alternate the binaries, so drift
# in the machine hits them alike. Prints each program's ns per run and their sum.
#
# usage: scripts/exec-cost.sh [-n ITERATIONS] [-r ROUNDS] BINARY...   (root)
set -euo pipefail

iterations=3000
rounds=2
while getopts n:r: opt; do
    case $opt in
        n) iterations=$OPTARG ;;
        r) rounds=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: $0 [-n ITERATIONS] [-r ROUNDS] BINARY..." >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "exec-cost: needs root (BPF statistics, cgroups)" >&2; exit 1; }
for bin in "$@"; do
    [ -x "$bin" ] || { echo "exec-cost: $bin: not an executable" >&2; exit 1; }
done

cgroup2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
[ -n "$cgroup2" ] || { echo "exec-cost: no cgroup v2 mount in /proc/mounts" >&2; exit 1; }
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing

work=$(mktemp -d)
slice="$cgroup2/rulehost-exec-cost.slice"
cgroup="$slice/cri-containerd-$(printf 'ab%.0s' $(seq 32)).scope"
agent=
cleanup() {
    [ -n "$agent" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
    echo 0 > /proc/sys/kernel/bpf_stats_enabled
    rmdir "$cgroup" "$slice" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$cgroup"

cat > "$work/spawn.py" <<'EOF'
import os, sys
env = {"HOME": "/root", "PATH": "/usr/bin:/bin", "HOSTNAME": "x",
       "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "LANG": "C"}
for _ in range(int(sys.argv[1])):
    os.waitpid(os.posix_spawn("/bin/true", ["/bin/true"], env), 0)
EOF

# One line per program of the agent: its name (looked up by verified instructions in
# `run --check`'s report, which names each program it loads), run time, run count.
programs() {
    for fd in /proc/"$1"/fdinfo/*; do
        awk '/prog_type/ { p = 1 } /verified_insns/ { v = $2 } /run_time_ns/ { t = $2 }
             /run_cnt/ { c = $2 } END { if (p) print v, t, c }' "$fd"
    done | sort | join - "$work/names" | awk '{ print $4, $2, $3 }' | sort
}

# One binary, one round: the agent's programs' ns per run over the spawns.
measure() {
    local bin=$1
    # A check that finds an unmet need still names every program it loaded.
    { "$bin" run --check --no-state-dir 2>/dev/null || true; } |
        sed -n 's/^program \([a-z0-9_]*\): \([0-9]*\) instructions verified.*/\2 \1/p' |
        sort > "$work/names"
    rm -f "$work/ready.json"
    "$bin" run --output /dev/null --ready-file "$work/ready.json" --no-state-dir \
        2> "$work/log" > /dev/null &
    agent=$!
    # Readiness is the agent's own ready file, not a sleep: poll it.
    for _ in $(seq 600); do
        [ -s "$work/ready.json" ] && break
        kill -0 "$agent" 2>/dev/null || break
        sleep 0.1
    done
    [ -s "$work/ready.json" ] || { echo "exec-cost: $bin never became ready:" >&2; tail -3 "$work/log" >&2; exit 1; }
    echo 1 > /proc/sys/kernel/bpf_stats_enabled
    programs "$agent" > "$work/before"
    bash -c "echo \$\$ > '$cgroup/cgroup.procs' && exec python3 '$work/spawn.py' $iterations"
    programs "$agent" > "$work/after"
    echo 0 > /proc/sys/kernel/bpf_stats_enabled
    kill -INT "$agent"
    wait "$agent" || true
    agent=
    join "$work/before" "$work/after" | awk -v bin="$bin" -v n="$iterations" '
        { runs = $5 - $3; if (runs > 0) { ns = ($4 - $2) / runs; sum += ns * runs / n
          printf "  %-12s %6.0f ns/run over %d runs\n", $1, ns, runs } }
        END { printf "  per fork+exec: %.0f ns (%s)\n", sum, bin }'
}

for round in $(seq "$rounds"); do
    echo "round $round"
    for bin in "$@"; do
        measure "$bin"
    done
done
