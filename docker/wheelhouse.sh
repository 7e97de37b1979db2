#!/usr/bin/env bash
# Fill docker/wheelhouse/ for `docker build` (the Dockerfile's builder stage searches it first).
#
#   docker/wheelhouse.sh          the CPU build of torch (${TORCH_CPU_SPEC:-torch==2.13.0+cpu}), taken by
#                                 pip from this machine's disk (pip's find-links); CI builds with
#                                 --build-arg TORCH_SPEC=torch==2.13.0+cpu
#   docker/wheelhouse.sh --all    also wheels of docker/requirements.txt (sdists built into wheels here)
#                                 and of torch's own dependencies, for an air-gapped build with
#                                 --build-arg PIP_OFFLINE=1
# Idempotent: a wheel already in the folder is not fetched again. Runs pip of ${PYTHON:-python3}, which
# must be CPython 3.11 on x86_64 Linux like the image (the wheels are cp311 manylinux).
set -euo pipefail
cd "$(dirname "$0")/.."

house=docker/wheelhouse
spec=${TORCH_CPU_SPEC:-torch==2.13.0+cpu}
py=${PYTHON:-python3}
mkdir -p "$house"

tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if [ "$tag" != cp311 ]; then
    echo "wheelhouse.sh: $py is $tag; the image's Python is 3.11 (cp311): set PYTHON=python3.11" >&2
    exit 1
fi

name=${spec%%[=<>!~]*}
version=${spec##*==}
if ls "$house/$name-$version-"*.whl >/dev/null 2>&1; then
    echo "wheelhouse.sh: $(ls "$house/$name-$version-"*.whl) already there"
else
    echo "wheelhouse.sh: fetching $spec"
    if ! "$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$house" "$spec"; then
        echo "wheelhouse.sh: pip found no wheel for $spec. On this project's machines it lies in /opt/wheels" \
             "(pip's find-links); elsewhere put a CPU torch wheel for cp311 into $house/ and pass its" \
             "version as TORCH_CPU_SPEC / --build-arg TORCH_SPEC" >&2
        exit 1
    fi
fi

if [ "${1:-}" = --all ]; then
    echo "wheelhouse.sh: wheels of torch's dependencies and docker/requirements.txt for an offline build"
    "$py" -m pip download --quiet --only-binary=:all: -d "$house" --find-links "$house" "$spec"
    "$py" -m pip wheel --quiet --no-deps -w "$house" --find-links "$house" -r docker/requirements.txt
fi
ls -la "$house"
