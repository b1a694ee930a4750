#!/usr/bin/env bash
# Brings up a real single-node Slurm cluster on localhost for the end-to-end test of
# `bulkhead slurm` (tests/e2e/slurm.rs), following shared/SLURM.md: Debian's slurmctld,
# slurmd and munge, as root, without systemd or cgroups.
#
# Safe to run anywhere: without root or apt it says why and exits 0 with no cluster (the test
# then says it was skipped). A cluster that is already up is used as it is. The daemons this
# script starts are listed in $STATE, so .ci/slurm-down.sh stops exactly those.
set -euo pipefail

STATE=/run/bulkhead-ci-slurm.started
CONF=/etc/slurm/slurm.conf
MARK="# written by bulkhead .ci/slurm-up.sh"
say() { echo "slurm-up: $*" >&2; }

# A daemon is up when the pid in its pid file is alive.
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
elapsed() { awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
node_ready() { sinfo -h -o %T 2>/dev/null | grep -qxE 'idle|mixed|allocated'; }

if [[ $(id -u) -ne 0 ]]; then
    say "not root: no Slurm cluster (the Slurm test will be skipped)"
    exit 0
fi
# Asking sinfo when no controller runs takes seconds of retries: ask only when one does.
ctld_pidfile=$(sed -n 's/^SlurmctldPidFile=//p' "$CONF" 2>/dev/null || true)
if command -v sinfo >/dev/null && alive "${ctld_pidfile:-/run/slurmctld.pid}" && timeout 5 sinfo -h -o %T 2>/dev/null |
    grep -qxE 'idle|mixed|allocated'; then
    say "a Slurm cluster is already up: using it"
    exit 0
fi

start=$(date +%s.%N)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null ||
    ! command -v munged >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        say "no apt-get to install Slurm: no cluster (the Slurm test will be skipped)"
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    pkgs=(slurmctld slurmd slurm-client munge)
    # The package lists may be missing or stale on a fresh machine: update only when needed.
    if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/tmp/slurm-up-apt.log 2>&1; then
        if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } \
            >>/tmp/slurm-up-apt.log 2>&1; then
            tail -n 20 /tmp/slurm-up-apt.log >&2
            say "cannot install Slurm from Debian's packages: no cluster (the Slurm test will be skipped)"
            exit 0
        fi
    fi
    say "installed ${pkgs[*]} in $(elapsed)s"
fi

# munge: the package made the key; without systemd its runtime directory is missing.
if ! alive /run/munge/munged.pid; then
    if [[ ! -s /etc/munge/munge.key ]]; then
        install -d -o munge -g munge -m 700 /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    echo munged >>"$STATE"
fi

install -d -o slurm -g slurm /var/spool/slurmctld /var/log/slurm /run/slurm
install -d /var/spool/slurmd

# Our own configuration, unless someone else's is there (then it is theirs to run).
if [[ ! -e $CONF ]] || grep -qxF "$MARK" "$CONF"; then
    host=$(hostname -s)
    # More memory than the machine has drains the node: declare about 90%.
    mem=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
    install -d /etc/slurm
    cat >"$CONF" <<EOF
$MARK
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire + 1 s before it may start again (default 120 s); the test
# requeues a shard, so keep the wait short.
AuthInfo=cred_expire=5
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Scheduling passes every second: a requeued shard (eligible again after cred_expire)
# would otherwise wait for the next periodic pass, up to 30 s.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1,sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
fi

if ! alive /run/slurm/slurmctld.pid; then
    # A clean run: old job state (and its job ids) would otherwise survive the restart.
    rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
    slurmctld
    echo slurmctld >>"$STATE"
fi
if ! alive /run/slurm/slurmd.pid; then
    slurmd
    echo slurmd >>"$STATE"
fi

# Both daemonize at once; the node reports idle about a second later. Bounded: 60 s.
for _ in $(seq 600); do
    node_ready && break
    sleep 0.1
done
if ! node_ready; then
    sinfo -N -l >&2 || true
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    say "the Slurm node did not become idle within 60 s"
    exit 1
fi
say "Slurm is up on $(hostname -s) ($(nproc) CPUs) after $(elapsed)s"
