#!/usr/bin/env bash
# Make a Docker engine reachable: install Debian's docker.io if dockerd is missing, start dockerd in the
# background if `docker info` fails, and wait until it answers. Idempotent: does nothing when an engine
# already answers. The daemon log goes to ${DOCKERD_LOG:-/var/log/dockerd.log}.
#
# Usage: docker/engine.sh            (needs root to install or start the engine)
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/dockerd.log}
wait_s=${DOCKERD_WAIT_S:-120}

if docker info >/dev/null 2>&1; then
    echo "engine.sh: Docker engine already reachable"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    "$(dirname "$0")/apt_install.sh" docker.io
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "engine.sh: starting dockerd (log: $log)"
    # No iptables and no default bridge: this machine has neither a NAT table nor a need for one. Builds
    # use `--network host`; containers run with the default 'none'-like isolation they get without a bridge.
    nohup dockerd --storage-driver=overlay2 --iptables=false --bridge=none >>"$log" 2>&1 &
fi

for _ in $(seq "$wait_s"); do
    if docker info >/dev/null 2>&1; then
        echo "engine.sh: Docker engine up ($(docker version --format '{{.Server.Version}}'))"
        exit 0
    fi
    sleep 1
done
echo "engine.sh: Docker engine did not answer within ${wait_s}s; last lines of $log:" >&2
tail -n 20 "$log" >&2 || true
exit 1
