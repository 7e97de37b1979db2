#!/usr/bin/env bash
# Build a local stand-in for the base image (no container registry is reachable from this machine or CI):
# Debian bookworm (minbase) from Debian's mirror via debootstrap, with python3 (3.11, as python:3.11-slim),
# python3-venv and ca-certificates, imported as ${BASE_TAG:-flare-base:bookworm}.
# Idempotent: does nothing when that tag exists. Needs root and a reachable engine (docker/engine.sh).
#
# The stand-in trusts the CA bundle of the host that builds it, so that pip inside image builds reaches
# PyPI the way this host does (here through a TLS-intercepting proxy). The real python:3.11-slim has
# Debian's stock bundle.
#
# Usage: docker/base_image.sh [TAG]
set -euo pipefail

tag=${1:-${BASE_TAG:-flare-base:bookworm}}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base_image.sh: $tag already exists"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    "$(dirname "$0")/apt_install.sh" debootstrap
fi

root=$(mktemp -d /tmp/flare-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base_image.sh: debootstrap bookworm into $root (a few minutes)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"

if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
# Slim it like the -slim images: no apt lists, caches, docs, man pages or locales beyond C.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
       "$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/tmp/*

tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
echo "base_image.sh: built $tag ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
docker run --rm --network none "$tag" python3 --version
