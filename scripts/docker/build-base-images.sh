#!/usr/bin/env bash
# Build stand-in base images from Debian packages, for Docker hosts that cannot pull from Docker Hub
# (air-gapped networks, or ours): docker-compose.yml then runs with
#
#   PYTHON_IMAGE=movierec-base/python:3.11      instead of python:3.11-slim
#   POSTGRES_IMAGE=movierec-base/postgres:15    instead of postgres:16 (same entrypoint variables)
#   PROXY_IMAGE=movierec-base/haproxy:2.6       instead of haproxy:2.8
#
# How: debootstrap (run here, as root) lays out a minimal Debian bookworm root file system that
# `docker import` turns into movierec-base/debian:bookworm; each stand-in is a small Dockerfile in
# docker/base/ on top of it that installs Debian's packages (python3 is 3.11 in bookworm). Both
# steps need Debian's package mirror (DEBIAN_MIRROR), and the image builds reach it through the
# host's network (`--network host`). Nothing from the host but packages goes into an image.
#
#   scripts/docker/build-base-images.sh            build the images that are missing
#   scripts/docker/build-base-images.sh --force    rebuild all of them
#   scripts/docker/build-base-images.sh --print    print the variables above (for a .env file)
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), BASE_IMAGE_PREFIX (default
# movierec-base), DEBOOTSTRAP_CACHE (a directory that keeps the downloaded .deb files between runs).
set -euo pipefail

cd "$(dirname "$0")/../.."
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PREFIX="${BASE_IMAGE_PREFIX:-movierec-base}"
SUITE=bookworm
DEBIAN_IMAGE="$PREFIX/debian:$SUITE"
# name of the stand-in -> its Dockerfile in docker/base/
declare -A STANDINS=(
    ["$PREFIX/python:3.11"]=python.Dockerfile
    ["$PREFIX/postgres:15"]=postgres.Dockerfile
    ["$PREFIX/haproxy:2.6"]=haproxy.Dockerfile
)

die() { echo "build-base-images: $*" >&2; exit 1; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

force=0
case "${1:-}" in
    --force) force=1 ;;
    --print)
        echo "PYTHON_IMAGE=$PREFIX/python:3.11"
        echo "POSTGRES_IMAGE=$PREFIX/postgres:15"
        echo "PROXY_IMAGE=$PREFIX/haproxy:2.6"
        exit 0 ;;
    "") ;;
    *) die "unknown option $1 (use --force or --print)" ;;
esac

command -v docker >/dev/null || die "the docker CLI is not installed"
docker info >/dev/null 2>&1 || die "no Docker Engine answers (is dockerd running, may this user use it?)"

build_debian() {
    [ "$(id -u)" = 0 ] || die "debootstrap needs root: sudo $0"
    command -v debootstrap >/dev/null || die "debootstrap is not installed: apt-get install -y debootstrap"
    local rootfs
    rootfs="$(mktemp -d /var/tmp/movierec-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    local cache=()
    if [ -n "${DEBOOTSTRAP_CACHE:-}" ]; then
        mkdir -p "$DEBOOTSTRAP_CACHE"
        cache=(--cache-dir="$(realpath "$DEBOOTSTRAP_CACHE")")
    fi
    echo "debootstrap $SUITE from $MIRROR (a few minutes)"
    debootstrap --variant=minbase "${cache[@]}" "$SUITE" "$rootfs" "$MIRROR" > "$rootfs.log" 2>&1 \
        || { tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "debootstrap failed"; }
    rm -f "$rootfs.log"
    # What Docker's debian:bookworm-slim does: updates and security in the sources, no services
    # started by package scripts, no documentation, man pages or translations, no apt caches.
    cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
EOF
    printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/info/*
EOF
    cat > "$rootfs/etc/apt/apt.conf.d/docker-slim" <<'EOF'
APT::Install-Recommends "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/info/* \
           "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
           "$rootfs"/var/log/*.log "$rootfs"/debootstrap
    tar --numeric-owner -C "$rootfs" -c . \
        | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
            --message "debootstrap --variant=minbase $SUITE" - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    echo "built $DEBIAN_IMAGE"
}

if [ "$force" = 1 ] || ! have_image "$DEBIAN_IMAGE"; then
    build_debian
fi
# The stand-ins build side by side (mostly package downloads); each one's output goes to a log
# that is shown only if it fails.
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
pids=()
names=()
for image in "${!STANDINS[@]}"; do
    if [ "$force" = 1 ] || ! have_image "$image"; then
        echo "building $image"
        # --network host reaches the package mirror on hosts whose containers have no other way out.
        docker build --network host --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
            --file "docker/base/${STANDINS[$image]}" --tag "$image" docker/base \
            > "$logs/${STANDINS[$image]}.log" 2>&1 &
        pids+=("$!")
        names+=("$image")
    fi
done
failed=0
for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
        echo "built ${names[$i]}"
    else
        tail -20 "$logs/${STANDINS[${names[$i]}]}.log" >&2
        echo "build-base-images: building ${names[$i]} failed (docker/base/${STANDINS[${names[$i]}]})" >&2
        failed=1
    fi
done
exit "$failed"
