#!/usr/bin/env bash
# Stops the local cluster started by scripts/slurm-start.sh, by the PIDs in its state directory, then deletes the
# network namespaces and links it made (listed in STATE_DIR/made).
#   usage: scripts/slurm-stop.sh [STATE_DIR]      (default /tmp/cifarbench-slurm)
set -uo pipefail
state=${1:-/tmp/cifarbench-slurm}
# Jobs first: a job step's slurmstepd outlives slurmd (reparented to init) and would keep its ports and processes.
if [ -f "$state/slurm.conf" ] && SLURM_CONF="$state/slurm.conf" scancel -u "$(id -un)" 2>/dev/null; then
    for _ in $(seq 1 50); do
        [ -z "$(SLURM_CONF="$state/slurm.conf" squeue -h -t RUNNING,COMPLETING 2>/dev/null)" ] && break
        sleep 0.2
    done
fi
for pidfile in "$state"/run/slurmd*.pid "$state/run/slurmctld.pid" "$state/munge/run/munged.pid"; do
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
done
if [ -f "$state/made" ]; then
    # the namespaces first (their veth ends go with them), then the links left on the host
    grep '^netns ' "$state/made" | while read -r _ name; do ip netns delete "$name" 2>/dev/null; done
    grep '^link ' "$state/made" | while read -r _ name; do ip link delete "$name" 2>/dev/null; done
    rm -f "$state/made"
fi
