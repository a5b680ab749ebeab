#!/usr/bin/env bash
# Installs (apt), configures and starts a real single-node Slurm cluster on localhost, as root, with no
# systemd: a private munged, slurmctld and slurmd, all under one state directory, each with a PID file.
# Prints the line to source for clients: export SLURM_CONF=...
#   usage: scripts/slurm-start.sh [STATE_DIR]      (default /tmp/cifarbench-slurm)
# Stop it with scripts/slurm-stop.sh [STATE_DIR]. Facts behind each setting: ../shared/notes/slurm-local.md
set -euo pipefail
state=${1:-/tmp/cifarbench-slurm}
cpus=${SLURM_LOCAL_CPUS:-8}  # advertised CPUs: more than the cores, so several small jobs run at once

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

"$(dirname "$0")/slurm-stop.sh" "$state" >/dev/null 2>&1 || true
mkdir -p "$state"
chmod 0755 "$state"  # munged runs as user munge and must reach its files below
mkdir -p "$state"/{munge/run,munge/log,munge/lib,munge/etc,spool/ctld,spool/d,log,run}
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
memory=$(( $(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p') * 9 / 10 ))
cat > "$state/slurm.conf" <<EOF
ClusterName=cifarbench-local
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
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
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$state/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

for _ in $(seq 1 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "slurm-start: the node did not become idle; see $state/log/" >&2
exit 1
