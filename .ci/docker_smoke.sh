#!/usr/bin/env bash
# CI smoke test of the real container: start a Docker engine if none answers, build the local base
# stand-in and the CPU image (numpy + OpenVINO, no torch; Docker's layer cache reused), then run the
# organisers' command (without --gpus) once per committed sample case and check every output
# (docker/smoke.py: present, input geometry, Dice >= 0.8 against samples/labels).
# Run from the repository root with the project's venv active (.ci/run does both).
set -euo pipefail
cd "$(dirname "$0")/.."

image=${SMOKE_IMAGE:-flare-mri-seg:latest}   # tests/test_docker.py checks flare-mri-seg:latest
start=$(date +%s)
docker/build.sh --variant cpu --tag "$image"
echo "docker_smoke: image ready after $(( $(date +%s) - start ))s"
python docker/smoke.py --image "$image" --samples samples --min-dice 0.8
echo "docker_smoke: done in $(( $(date +%s) - start ))s"
