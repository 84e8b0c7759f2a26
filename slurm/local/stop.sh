#!/usr/bin/env bash
# Stop the local Slurm cluster started by start.sh: cancel all jobs, then stop its daemons.
# Usage: stop.sh [STATE_DIR]    (default: ${CHAINRULE_SLURM_DIR:-/tmp/chainrule-slurm})
# Only processes named in STATE_DIR's PID files (after checking their process name), and
# processes inside the slurmd nodes' private mount namespaces, are signalled.
set -euo pipefail

STATE_DIR=${1:-${CHAINRULE_SLURM_DIR:-/tmp/chainrule-slurm}}
QUEUE_TIMEOUT=${CHAINRULE_SLURM_QUEUE_TIMEOUT:-20}
KILL_AFTER=${CHAINRULE_SLURM_KILL_AFTER:-20}
NODES=(n1 n2)

log() { echo "[slurm-local] $*" >&2; }

if [[ ! -d $STATE_DIR ]]; then
    log "no cluster state in $STATE_DIR; nothing to stop"
    exit 0
fi
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
RUN=$STATE_DIR/run
export SLURM_CONF=$STATE_DIR/etc/slurm.conf
export PATH=$PATH:/usr/sbin:/sbin

signalled=()

# pid_of PIDFILE NAME: print the PID from PIDFILE if that process is running and named NAME.
pid_of() {
    local pid
    [[ -r $1 ]] || return 1
    pid=$(<"$1") || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
    echo "$pid"
}

# terminate LABEL PID...: SIGTERM the PIDs, SIGKILL whatever is left after KILL_AFTER seconds.
terminate() {
    local label=$1 pid left deadline
    shift
    (($#)) || return 0
    log "stopping $label (pid $*)"
    signalled+=("$@")
    kill -TERM "$@" 2>/dev/null || true
    deadline=$((SECONDS + KILL_AFTER))
    while :; do
        left=()
        for pid in "$@"; do
            if kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/stat" 2>/dev/null | awk '{print $3}') != Z ]]; then
                left+=("$pid")
            fi
        done
        ((${#left[@]})) || return 0
        if ((SECONDS >= deadline)); then
            log "still running after ${KILL_AFTER}s, sending SIGKILL to $label (pid ${left[*]})"
            kill -KILL "${left[@]}" 2>/dev/null || true
            return 0
        fi
        sleep 0.2
    done
}

# stop_pidfile NAME PIDFILE...: terminate the daemons named NAME recorded in the PID files.
stop_pidfile() {
    local name=$1 f pid pids=()
    shift
    for f in "$@"; do
        if pid=$(pid_of "$f" "$name"); then pids+=("$pid"); fi
    done
    terminate "$name" "${pids[@]}"
    rm -f "$@"
}

# 1. Jobs first: their steps (slurmstepd and the job's processes) outlive slurmd.
if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    mapfile -t jobs < <(squeue -h -o %A 2>/dev/null || true)
    if ((${#jobs[@]})); then
        log "cancelling ${#jobs[@]} job(s)"
        scancel "${jobs[@]}" 2>/dev/null || true
        deadline=$((SECONDS + QUEUE_TIMEOUT))
        while [[ -n $(squeue -h -o %A 2>/dev/null || echo unknown) ]]; do
            if ((SECONDS >= deadline)); then
                log "queue not empty after ${QUEUE_TIMEOUT}s; stopping anyway"
                break
            fi
            sleep 0.2
        done
    fi
fi

# 2. Remember each node's mount namespace before its slurmd goes away; every process left in it
# belongs to that node (only its slurmd and the jobs it launched ever entered it).
own_ns=$(readlink /proc/self/ns/mnt)
node_ns=()
for n in "${NODES[@]}"; do
    if pid=$(pid_of "$RUN/slurmd-$n.pid" slurmd); then
        ns=$(readlink "/proc/$pid/ns/mnt" 2>/dev/null || true)
        if [[ -n $ns && $ns != "$own_ns" ]]; then node_ns+=("$ns"); fi
    fi
done

slurmd_pidfiles=()
for n in "${NODES[@]}"; do slurmd_pidfiles+=("$RUN/slurmd-$n.pid"); done
stop_pidfile slurmd "${slurmd_pidfiles[@]}"
stop_pidfile slurmctld "$RUN/slurmctld.pid"

if ((${#node_ns[@]})); then
    leftovers=()
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [[ $pid != "$$" ]] || continue
        ns=$(readlink "$p/ns/mnt" 2>/dev/null) || continue
        for want in "${node_ns[@]}"; do
            if [[ $ns == "$want" ]]; then leftovers+=("$pid"); fi
        done
    done
    terminate "leftover job processes" "${leftovers[@]}"
fi

# 3. Accounting, then its database, then authentication (the others use munge until they exit).
stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
stop_pidfile mariadbd "$RUN/mariadbd.pid"
stop_pidfile munged "$RUN/munged.pid"

# Exited daemons stay in the process table until init reaps them; wait (bounded) so callers that
# inspect the process table right after stop.sh see them gone.
deadline=$((SECONDS + 5))
for pid in "${signalled[@]}"; do
    while [[ -e /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.1; done
done

log "cluster in $STATE_DIR stopped"
