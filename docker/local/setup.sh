#!/usr/bin/env bash
# Podman on a Debian machine without Docker, set up for docker/Dockerfile and its tests: installs podman,
# runc and debootstrap when missing, and writes a configuration that keeps every image, container and
# network in one state directory, apart from any other podman user of the machine.
# Usage: setup.sh [STATE_DIR]    (default: ${CHAINRULE_CONTAINER_DIR:-/var/tmp/chainrule-containers})
# Prints the client environment (export lines) on stdout; everything else goes to stderr, so
# `source <(docker/local/setup.sh)` works. The same lines are written to STATE_DIR/env.sh.
set -euo pipefail

STATE_DIR=${1:-${CHAINRULE_CONTAINER_DIR:-/var/tmp/chainrule-containers}}
PACKAGES=(podman runc debootstrap)
TIMEOUT=${CHAINRULE_CONTAINER_TIMEOUT:-600}

log() { echo "[podman-local] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Podman runs rootful here: debootstrap needs root, and rootless podman needs subordinate uid ranges
# that a CI machine does not have.
[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, debootstrap, rootful podman)"

mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
# Serialise concurrent setups (package installation included) on the same state directory.
exec 9>"$STATE_DIR/.lock"
flock -w "$TIMEOUT" 9 || die "another setup.sh holds $STATE_DIR/.lock"

# --- packages -----------------------------------------------------------------------------
packages_present() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || return 1
    done
}

install_packages() {
    # Other jobs on the machine may hold the dpkg lock for a while: wait for it rather than fail.
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=$TIMEOUT" install -y
               --no-install-recommends "${PACKAGES[@]}")
    "${apt[@]}" >&2 || {
        log "apt-get install failed; refreshing package lists and retrying"
        apt-get -o "DPkg::Lock::Timeout=$TIMEOUT" update >&2 && "${apt[@]}" >&2
    }
}

if ! packages_present; then
    command -v apt-get >/dev/null || die "podman is missing and there is no apt-get to install it"
    log "installing ${PACKAGES[*]}"
    install_packages || die "package installation failed"
fi

# --- configuration ------------------------------------------------------------------------
# write_if_changed FILE: replace FILE with stdin only when the content differs.
write_if_changed() {
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat >"$tmp"
    chmod 644 "$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}

mkdir -p "$STATE_DIR/storage" "$STATE_DIR/run" "$STATE_DIR/networks"

write_if_changed "$STATE_DIR/containers.conf" <<CONF
[containers]
# Containers keep the limits they inherit. Podman's default raises the open-files limit, which a VM or
# a container around podman may refuse ("error setting rlimit type 7: operation not permitted").
default_ulimits = []

[engine]
# crun's setrlimit is refused in the same places; runc works.
runtime = "runc"

[network]
network_config_dir = "$STATE_DIR/networks"
CONF

write_if_changed "$STATE_DIR/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$STATE_DIR/storage"
runroot = "$STATE_DIR/run"
CONF

printf 'export CONTAINERS_CONF=%q\nexport CONTAINERS_STORAGE_CONF=%q\nexport CHAINRULE_CONTAINER_DIR=%q\n' \
    "$STATE_DIR/containers.conf" "$STATE_DIR/storage.conf" "$STATE_DIR" | write_if_changed "$STATE_DIR/env.sh"
CONTAINERS_CONF=$STATE_DIR/containers.conf CONTAINERS_STORAGE_CONF=$STATE_DIR/storage.conf \
    podman info --format '{{.Store.GraphDriverName}}' >/dev/null ||
    die "podman does not start with $STATE_DIR/containers.conf and storage.conf"
log "podman $(podman --version | awk '{print $3}') ready (state in $STATE_DIR)"
cat "$STATE_DIR/env.sh"
