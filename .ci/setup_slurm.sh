#!/usr/bin/env bash
# A single-node SLURM cluster for the tests: slurmctld + slurmd on this machine, two fake GPUs declared as
# generic resources, no accounting database (Debian 12's Slurm 22.05; measured in ../shared/environment.md §1).
#
#   .ci/setup_slurm.sh          install the packages if missing, write /etc/slurm, start munged/slurmctld/slurmd
#   .ci/setup_slurm.sh stop     stop the daemons this script started (by their pid files)
#
# Needs root: the packages, /etc/slurm, and slurmd itself. The configuration must live in /etc/slurm: the
# jobs' srun drops SLURM_CONF from its environment and cannot find any other file.
set -euo pipefail
STATE=${SLURM_STATE_DIR:-${TMPDIR:-/tmp}/medlens-slurm}
STARTED=$STATE/started  # one pid file per daemon this script started; `stop` stops only those

if [ "${1:-start}" = stop ]; then
  for f in "$STARTED"/slurmd.pid "$STARTED"/slurmctld.pid "$STARTED"/munged.pid; do
    [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup_slurm.sh: needs root (packages, /etc/slurm, slurmd)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(($(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 2048))
mkdir -p "$STATE"/{state,spool} /run/munge /etc/slurm
chown munge:munge /run/munge
# GRES GPUs must be backed by device files: a character device is accepted (regular files and
# file-less GPUs are not), and this one has /dev/null's numbers so nothing can be done with it.
for i in 0 1; do
  [ -c "$STATE/fakegpu$i" ] || mknod "$STATE/fakegpu$i" c 1 3
done

cat >/etc/slurm/slurm.conf <<CONF
# written by medlens/.ci/setup_slurm.sh: one node, two fake GPUs, no accounting
ClusterName=medlens-ci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
GresTypes=gpu
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that names no memory takes the whole node and jobs run one at a time
DefMemPerCPU=2000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# finished jobs stay visible to squeue for 5 min: the executor plugin reads job states with squeue
# (no accounting, so no sacct) and accepts it only when MinJobAge >= 3 x its first status delay
MinJobAge=300
# seconds between SIGTERM and SIGKILL (scancel, time limit): the time training has to write its checkpoint
KillWait=30
NodeName=$HOST Gres=gpu:2 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
echo "Name=gpu File=$STATE/fakegpu[0-1]" >/etc/slurm/gres.conf

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# start DAEMON PIDFILE COMMAND...: start it unless it runs, and remember that this script started it
start() {
  local name=$1 pidfile=$2
  shift 2
  running "$pidfile" && return 0
  "$@"
  for _ in $(seq 1 50); do running "$pidfile" && break; sleep 0.1; done
  running "$pidfile" || { echo "setup_slurm.sh: $name did not start" >&2; exit 1; }
  cp "$pidfile" "$STARTED/$name.pid"
}
mkdir -p "$STARTED"
# munged refuses to run as root; its key comes from the package's postinst
start munged /run/munge/munged.pid runuser -u munge -- /usr/sbin/munged
start slurmctld "$STATE/slurmctld.pid" /usr/sbin/slurmctld
start slurmd "$STATE/slurmd.pid" /usr/sbin/slurmd
for _ in $(seq 1 60); do
  sinfo -h -o '%T' 2>/dev/null | grep -qx idle && break
  sleep 0.5
done
if ! sinfo -h -o '%T' | grep -qx idle; then
  echo "setup_slurm.sh: the node did not become idle; see $STATE/slurmctld.log and $STATE/slurmd.log" >&2
  sinfo -R >&2 || true
  exit 1
fi
sinfo -o '%P %T %G %c %m'
