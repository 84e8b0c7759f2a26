#!/usr/bin/env bash
# A base image for docker/Dockerfile where the PyTorch image cannot be pulled (no registry, no Docker Hub):
# Debian 12 from debootstrap, then docker/local/Containerfile.debian: Python 3.11 and the torch and
# torchvision that the Makefile pins, installed by pip into a venv.
# Usage: base.sh IMAGE [podman build options...], e.g. for a local wheel mirror:
#   docker/local/base.sh chainrule-base -v /srv/wheels:/srv/wheels:ro --build-arg PIP_FIND_LINKS=/srv/wheels
# Needs root (debootstrap) and the environment that docker/local/setup.sh prints.
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 IMAGE [podman build options...]" >&2; exit 2; }
IMAGE=$1
shift
HERE=$(cd "$(dirname "$0")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
DEBIAN_IMAGE=${CHAINRULE_DEBIAN_IMAGE:-localhost/chainrule-debian:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { echo "[podman-local] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The torch pair that `make install` installs: the Makefile is the one place that pins it.
TORCH_PACKAGES=$(grep -oE 'torch==[^ ]+ torchvision==[^ ]+' "$REPO/Makefile" | head -n 1) ||
    die "no 'torch==... torchvision==...' pin in $REPO/Makefile"

scratch=$(mktemp -d "${TMPDIR:-/var/tmp}/chainrule-base.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

if ! podman image exists "$DEBIAN_IMAGE"; then
    rootfs=$scratch/rootfs
    log "debootstrap bookworm (minbase, python3, python3-venv) from $DEBIAN_MIRROR"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$DEBIAN_MIRROR" >&2 ||
        die "debootstrap failed"
    tar -C "$rootfs" -c . | podman import - "$DEBIAN_IMAGE" >&2
    rm -rf "$rootfs"
fi

# Nothing is copied into this image: an empty build context.
context=$scratch/context
mkdir "$context"
log "building $IMAGE: $DEBIAN_IMAGE + $TORCH_PACKAGES"
podman build -f "$HERE/Containerfile.debian" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
    --build-arg "TORCH_PACKAGES=$TORCH_PACKAGES" "$@" -t "$IMAGE" "$context" >&2
