#!/usr/bin/env bash
# Start a two-node Slurm cluster (n1, n2) with accounting on this machine.
# Usage: start.sh [STATE_DIR]    (default: ${CHAINRULE_SLURM_DIR:-/tmp/chainrule-slurm})
# Prints the client environment (export lines) on stdout; everything else goes to stderr,
# so `source <(start.sh)` works. The same lines are written to STATE_DIR/env.sh.
set -euo pipefail

STATE_DIR=${1:-${CHAINRULE_SLURM_DIR:-/tmp/chainrule-slurm}}
CLUSTER=chainrule
ACCOUNT=chainrule
NODES=(n1 n2)
CPUS_PER_NODE=2
CTLD_PORT=${CHAINRULE_SLURM_CTLD_PORT:-6817}
DBD_PORT=${CHAINRULE_SLURM_DBD_PORT:-6819}
NODE_PORT=${CHAINRULE_SLURM_NODE_PORT:-17001}
TIMEOUT=${CHAINRULE_SLURM_TIMEOUT:-60}
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

log() { echo "[slurm-local] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (daemons run as root and slurmd needs mount namespaces)"

mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
# Serialise concurrent starts (package installation included) on the same state directory.
exec 9>"$STATE_DIR/.lock"
flock -w "$TIMEOUT" 9 || die "another start.sh holds $STATE_DIR/.lock"
ETC=$STATE_DIR/etc
RUN=$STATE_DIR/run
LOGS=$STATE_DIR/log
SPOOL=$STATE_DIR/spool
MUNGE=$STATE_DIR/munge
DB=$STATE_DIR/mysql
export SLURM_CONF=$ETC/slurm.conf
MUNGE_SOCKET=$MUNGE/munge.socket
export MYSQL_UNIX_PORT=$DB/mysqld.sock

export PATH=$PATH:/usr/sbin:/sbin

# --- packages -----------------------------------------------------------------------------
packages_present() {
    local cmd pkg
    for cmd in slurmctld slurmd sbatch sacct sacctmgr munged slurmdbd mariadbd mariadb-install-db; do
        command -v "$cmd" >/dev/null 2>&1 || return 1
    done
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || return 1
    done
}

install_packages() {
    local policy=/usr/sbin/policy-rc.d created_policy=0
    # Keep the packages' init scripts from starting system-wide munge/mariadb/slurm daemons.
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
    fi
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}")
    local rc=0
    "${apt[@]}" >&2 || { log "apt-get install failed; refreshing package lists and retrying"; apt-get update >&2 && "${apt[@]}" >&2; } || rc=$?
    if ((created_policy)); then rm -f "$policy"; fi
    return "$rc"
}

if ! packages_present; then
    log "installing ${PACKAGES[*]}"
    install_packages || die "package installation failed"
fi

# --- helpers ------------------------------------------------------------------------------
# pid_alive PIDFILE NAME: the PID in PIDFILE is running and its process name is NAME.
pid_alive() {
    local pid
    [[ -r $1 ]] || return 1
    pid=$(<"$1") || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

show_logs() {
    local f
    for f in "$LOGS"/*.log; do
        [[ -e $f ]] || continue
        echo "----- tail $f -----" >&2
        tail -n 25 "$f" >&2 || true
    done
}

# wait_until DESCRIPTION COMMAND...: poll COMMAND until it succeeds or TIMEOUT seconds pass.
wait_until() {
    local what=$1 deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            show_logs
            die "timed out after ${TIMEOUT}s waiting for $what (logs above, state in $STATE_DIR)"
        fi
        sleep 0.2
    done
}

# write_if_changed FILE MODE: replace FILE with stdin only when the content differs, so a running
# cluster's configuration is not touched on repeated starts.
write_if_changed() {
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat >"$tmp"
    chmod "$2" "$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$1"
    fi
}

# --- state directory and configuration ----------------------------------------------------
# munged refuses group/world-writable directories on its socket, key and log paths.
mkdir -p "$ETC" "$RUN" "$LOGS" "$SPOOL/slurmctld" "$MUNGE" "$DB"
chmod 755 "$STATE_DIR" "$ETC" "$RUN" "$LOGS" "$SPOOL" "$MUNGE"
chmod 700 "$DB"
for n in "${NODES[@]}"; do mkdir -p "$SPOOL/slurmd-$n"; done

if [[ ! -s $MUNGE/munge.key ]]; then
    (umask 077 && dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none)
fi
chmod 400 "$MUNGE/munge.key"

mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)

write_if_changed "$SLURM_CONF" 644 <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also bounds how soon a requeued job may start again (default 120 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
CredType=cred/munge
StateSaveLocation=$SPOOL/slurmctld
SlurmdSpoolDir=$SPOOL/slurmd-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# Virtual nodes may declare more CPUs/memory than the host really has.
SlurmdParameters=config_overrides
SchedulerParameters=bf_interval=2,sched_interval=2
JobRequeue=1
ReturnToService=2
KillWait=10
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# The slurmdbd connection takes its munge socket from here, not from AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
NodeName=n[1-2] NodeAddr=127.0.0.1 Port=[$NODE_PORT-$((NODE_PORT + 1))] CPUs=$CPUS_PER_NODE RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
EOF

# Hosts file bind-mounted over /etc/hosts inside each slurmd's private mount namespace, so node
# names resolve for jobs without editing the machine's /etc/hosts.
{
    grep -vE '(^|[[:space:]])(n1|n2)([[:space:]]|$)' /etc/hosts || true
    echo "127.0.0.1 ${NODES[*]}"
} | write_if_changed "$ETC/hosts" 644

# Daemons get no inherited stdio or lock fd: a caller reading our stdout to EOF must not hang.
# --- munge --------------------------------------------------------------------------------
if ! pid_alive "$RUN/munged.pid" munged; then
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    log "starting munged"
    munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE/munge.key" --pid-file="$RUN/munged.pid" \
        --log-file="$LOGS/munged.log" --seed-file="$MUNGE/munged.seed" \
        </dev/null >>"$LOGS/munged.log" 2>&1 9>&- || { show_logs; die "munged failed to start"; }
fi
wait_until "munged socket" test -S "$MUNGE_SOCKET"

# --- mariadb ------------------------------------------------------------------------------
if ! pid_alive "$RUN/mariadbd.pid" mariadbd; then
    if [[ ! -d $DB/data/mysql ]]; then
        log "initialising MariaDB in $DB/data"
        rm -rf "$DB/data"
        mariadb-install-db --no-defaults --user=root --datadir="$DB/data" --skip-test-db \
            </dev/null >>"$LOGS/mariadb-install.log" 2>&1 9>&- ||
            { show_logs; die "mariadb-install-db failed"; }
    fi
    rm -f "$MYSQL_UNIX_PORT"
    log "starting mariadbd"
    setsid -f mariadbd --no-defaults --user=root --datadir="$DB/data" --socket="$MYSQL_UNIX_PORT" \
        --pid-file="$RUN/mariadbd.pid" --skip-networking --log-error="$LOGS/mariadbd.log" \
        --innodb-lock-wait-timeout=900 \
        </dev/null >>"$LOGS/mariadbd.log" 2>&1 9>&-
fi
wait_until "MariaDB socket" test -S "$MYSQL_UNIX_PORT"

# --- slurmdbd -----------------------------------------------------------------------------
if ! pid_alive "$RUN/slurmdbd.pid" slurmdbd; then
    log "starting slurmdbd"
    slurmdbd </dev/null >>"$LOGS/slurmdbd.log" 2>&1 9>&- || { show_logs; die "slurmdbd failed to start"; }
fi
wait_until "slurmdbd" sacctmgr -n -P list cluster format=cluster

if [[ -z $(sacctmgr -n -P list assoc cluster="$CLUSTER" account="$ACCOUNT" user=root format=user 2>/dev/null) ]]; then
    if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster 2>/dev/null) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >&2
    fi
    if [[ -z $(sacctmgr -n -P list account "$ACCOUNT" format=account 2>/dev/null) ]]; then
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="$CLUSTER jobs" organization="$CLUSTER" >&2
    fi
    sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >&2
fi

# --- slurmctld ----------------------------------------------------------------------------
if ! pid_alive "$RUN/slurmctld.pid" slurmctld; then
    log "starting slurmctld"
    slurmctld </dev/null >>"$LOGS/slurmctld.log" 2>&1 9>&- || { show_logs; die "slurmctld failed to start"; }
fi
wait_until "slurmctld" scontrol ping

# --- slurmd x2 ----------------------------------------------------------------------------
for n in "${NODES[@]}"; do
    if ! pid_alive "$RUN/slurmd-$n.pid" slurmd; then
        log "starting slurmd $n"
        # Private mount + UTS namespace: jobs on node $n see hostname $n and resolve n1/n2.
        # shellcheck disable=SC2016
        unshare --mount --uts --propagation private -- sh -c \
            'mount --bind "$1" /etc/hosts && hostname "$2" && exec slurmd -N "$2"' \
            sh "$ETC/hosts" "$n" \
            </dev/null >>"$LOGS/slurmd-$n.log" 2>&1 9>&- || { show_logs; die "slurmd $n failed to start"; }
    fi
done

nodes_ready() {
    local states
    states=$(sinfo -h -N -p debug -o '%N %t' 2>/dev/null) || return 1
    for n in "${NODES[@]}"; do
        grep -qE "^$n (idle|mix|alloc|comp)\$" <<<"$states" || return 1
    done
}
wait_until "nodes ${NODES[*]} to become idle" nodes_ready

printf 'export SLURM_CONF=%q\nexport CHAINRULE_SLURM_DIR=%q\n' "$SLURM_CONF" "$STATE_DIR" |
    write_if_changed "$STATE_DIR/env.sh" 644
log "cluster $CLUSTER ready (state in $STATE_DIR)"
cat "$STATE_DIR/env.sh"
