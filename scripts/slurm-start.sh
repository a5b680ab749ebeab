#!/usr/bin/env bash
# Installs (apt), configures and starts a real Slurm cluster on this host, as root, with no systemd: a private
# munged, slurmctld and one slurmd per node, all under one state directory, each with a PID file.
# One node (default): the slurmd runs on the host, at 127.0.0.1.
# N nodes: each slurmd runs in its own network and UTS namespace (netns cbnodeK, hostname nodeK, address
# 10.213.0.(10+K) on a veth pair into the bridge cbslurm0, which holds the controller's 10.213.0.1), and a mount
# namespace whose /etc/hosts names every node, so jobs on nodeK see a machine of their own and reach the others by
# name (Lightning's SLURMEnvironment takes MASTER_ADDR from the node list). Everything made is listed in
# STATE_DIR/made, and scripts/slurm-stop.sh removes it.
# Prints the line to source for clients: export SLURM_CONF=...
#   usage: scripts/slurm-start.sh [--nodes N] [STATE_DIR]      (default 1 node, /tmp/cifarbench-slurm)
# Facts behind each setting: ../shared/notes/slurm-local.md and docs/local-cluster.md
set -euo pipefail
nodes=1
if [ "${1:-}" = "--nodes" ]; then
    nodes=${2:-}
    shift 2 || true
fi
case "$nodes" in
    [1-9]) ;;
    *) echo "slurm-start: --nodes='$nodes': allowed: a whole number from 1 to 9" >&2; exit 2 ;;
esac
state=${1:-/tmp/cifarbench-slurm}
subnet=10.213.0  # private, inside namespaces this script creates: no traffic leaves the host
cpus=${SLURM_LOCAL_CPUS:-8}  # advertised CPUs: more than the cores, so several small jobs run at once
port=${SLURM_LOCAL_PORT:-6817}  # slurmctld's; slurmd's is the next one (another cluster on this host needs others)

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

"$(dirname "$0")/slurm-stop.sh" "$state" >/dev/null 2>&1 || true
mkdir -p "$state"
chmod 0755 "$state"  # munged runs as user munge and must reach its files below
mkdir -p "$state"/{munge/run,munge/log,munge/lib,munge/etc,spool/ctld,log,run}
chown -R munge:munge "$state/munge"
chmod 0755 "$state/munge" "$state/munge/run"
chmod 0700 "$state/munge/log" "$state/munge/lib" "$state/munge/etc"
if [ ! -s "$state/munge/etc/munge.key" ]; then
    dd if=/dev/urandom bs=1 count=1024 of="$state/munge/etc/munge.key" status=none
    chown munge:munge "$state/munge/etc/munge.key"
    chmod 0400 "$state/munge/etc/munge.key"
fi
socket="$state/munge/run/munge.socket"
runuser -u munge -- munged --key-file="$state/munge/etc/munge.key" --socket="$socket" \
    --pid-file="$state/munge/run/munged.pid" --log-file="$state/munge/log/munged.log" \
    --seed-file="$state/munge/lib/munged.seed"

host=$(hostname -s)
memory=$(( $(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p') * 9 / 10 / nodes ))
: > "$state/made"  # what slurm-stop.sh deletes besides the daemons: one "netns NAME" or "link NAME" per line
if [ "$nodes" = 1 ]; then
    controller=$host
    node_lines="NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN"
else
    controller="$host($subnet.1)"
    # names this script owns, left by a cluster whose state directory is gone (its daemons died with the machine)
    for name in $(ip netns list | grep -o '^cbnode[0-9]*'); do ip netns delete "$name"; done
    ip link show cbslurm0 >/dev/null 2>&1 && ip link delete cbslurm0
    ip link add cbslurm0 type bridge
    echo "link cbslurm0" >> "$state/made"
    ip addr add "$subnet.1/24" dev cbslurm0
    ip link set cbslurm0 up
    printf '127.0.0.1 localhost\n%s.1 %s\n' "$subnet" "$host" > "$state/hosts"
    node_lines=""
    for k in $(seq 1 "$nodes"); do
        address=$subnet.$((10 + k))
        ip netns add "cbnode$k"
        echo "netns cbnode$k" >> "$state/made"
        ip link add "cbnode$k-h" type veth peer name "cbnode$k-n"
        echo "link cbnode$k-h" >> "$state/made"
        ip link set "cbnode$k-h" master cbslurm0 up
        ip link set "cbnode$k-n" netns "cbnode$k"
        ip -n "cbnode$k" addr add "$address/24" dev "cbnode$k-n"
        ip -n "cbnode$k" link set lo up
        ip -n "cbnode$k" link set "cbnode$k-n" up
        echo "$address node$k" >> "$state/hosts"
        node_lines+="NodeName=node$k NodeAddr=$address CPUs=$cpus RealMemory=$memory State=UNKNOWN"$'\n'
    done
fi
cat > "$state/slurm.conf" <<EOF
ClusterName=cifarbench-local
SlurmctldHost=$controller
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d-%n
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd-%n.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd-%n.log
SlurmctldPort=$port
SlurmdPort=$((port + 1))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerParameters=batch_sched_delay=0
EnforcePartLimits=ALL
MinJobAge=3600
SlurmdParameters=config_overrides
$node_lines
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$state/slurm.conf"
slurmctld -f "$SLURM_CONF"
if [ "$nodes" = 1 ]; then
    mkdir -p "$state/spool/d-$host"
    slurmd -f "$SLURM_CONF"
else
    for k in $(seq 1 "$nodes"); do
        mkdir -p "$state/spool/d-node$k"
        # nsenter, not `ip netns exec`: that remounts /sys, and slurmd then fails to read its cgroup files;
        # the mount namespace is private (unshare's default), so /etc/hosts changes for this node's processes only
        nsenter --net="/run/netns/cbnode$k" unshare --mount --uts sh -c \
            "mount --bind '$state/hosts' /etc/hosts && hostname node$k && exec slurmd -f '$SLURM_CONF' -N node$k"
    done
fi

for _ in $(seq 1 60); do
    if [ "$(sinfo -h -N -o %T 2>/dev/null | grep -cx idle)" = "$nodes" ]; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "slurm-start: not all $nodes node(s) became idle; see $state/log/" >&2
exit 1
