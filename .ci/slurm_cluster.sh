#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for CI's test of the pseudo-labelling job array
# (tests/test_slurm_array.py): installs Debian's Slurm and MUNGE if missing, writes /etc/slurm/slurm.conf
# for this host (all its CPUs, no cgroup plugins: processes tracked through /proc), starts munged,
# slurmctld and slurmd without systemd and waits until the node is idle. Idempotent: does nothing when
# `sinfo` already shows an idle or busy node. Needs root.
#
# Usage: .ci/slurm_cluster.sh [start|stop]       (default start)
# Logs: /var/log/slurm/slurmctld.log and slurmd.log.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-start}
conf=/etc/slurm/slurm.conf
marker="# written by flare-mri-seg .ci/slurm_cluster.sh"

stop() {
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
}
case "$action" in
    start) ;;
    stop) stop; exit 0 ;;
    *) echo "slurm_cluster.sh: start or stop, not $action" >&2; exit 2 ;;
esac

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n 1; }
case "$(command -v sinfo >/dev/null && node_state)" in
    idle|mixed|allocated|completing)
        echo "slurm_cluster.sh: cluster already up ($(sinfo -h -N -o '%N %c CPUs %T' | head -n 1))"
        exit 0 ;;
esac

docker/apt_install.sh munge slurmctld slurmd slurm-client

node=$(hostname -s)
cpus=$(nproc)
if [ -f "$conf" ] && ! grep -qF "$marker" "$conf"; then
    echo "slurm_cluster.sh: $conf exists and is not ours; leaving it as it is" >&2
else
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat >"$conf" <<CONF
$marker
ClusterName=flareci
SlurmctldHost=$node
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
# No cgroups: tasks are tracked through /proc and not confined (a CI container has no cgroup rights).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
# One CPU per array task, so that tasks run side by side on the node's CPUs.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=ci Nodes=$node Default=YES MaxTime=60 State=UP
CONF
fi

# munged as its own user (it refuses root); the key comes with Debian's package.
if ! pgrep -x munged >/dev/null; then
    [ -f /etc/munge/munge.key ] || runuser -u munge -- /usr/sbin/mungekey --create
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
    state=$(node_state || true)
    case "$state" in
        idle|mixed|allocated) echo "slurm_cluster.sh: cluster up: node $node, $cpus CPUs, $state"; exit 0 ;;
        down*|drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "slurm_cluster.sh: the node did not become idle within 60 s (state '${state:-none}'); last log lines:" >&2
tail -n 10 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
