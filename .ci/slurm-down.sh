#!/usr/bin/env bash
# Stops the daemons that .ci/slurm-up.sh started, and only those: it listed them in $STATE,
# and each is stopped by the pid in its own pid file (SIGTERM, then SIGKILL after 10 s).
# A cluster that was already running before slurm-up is left alone.
set -uo pipefail

STATE=/run/bulkhead-ci-slurm.started
say() { echo "slurm-down: $*" >&2; }

[[ -s $STATE ]] || exit 0

pidfile() {
    case $1 in
    slurmd) echo /run/slurm/slurmd.pid ;;
    slurmctld) echo /run/slurm/slurmctld.pid ;;
    munged) echo /run/munge/munged.pid ;;
    esac
}

stop() {
    local name=$1 file pid
    file=$(pidfile "$name")
    [[ -s $file ]] || return 0
    pid=$(cat "$file")
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || {
            say "stopped $name (pid $pid)"
            return 0
        }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    say "killed $name (pid $pid): it ignored SIGTERM for 10 s"
}

# Jobs still running (a test that failed half-way) would outlive slurmd as orphaned step
# daemons: cancel every job of the cluster we started, and give them 10 s to end.
if grep -qxF slurmctld "$STATE" && command -v squeue >/dev/null; then
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u)
    if [[ -n $jobs ]]; then
        say "cancelling jobs left in the queue: $(echo $jobs)"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 100); do
            [[ -z $(timeout 5 squeue -h 2>/dev/null) ]] && break
            sleep 0.1
        done
    fi
fi

# The node daemon first, munge last: the others authenticate through it as they stop.
for name in slurmd slurmctld munged; do
    grep -qxF "$name" "$STATE" && stop "$name"
done
rm -f "$STATE"
