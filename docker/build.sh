#!/usr/bin/env bash
# Build the submission image on this machine: make sure an engine answers (docker/engine.sh), the local
# base stand-in exists (docker/base_image.sh) and, for the CPU variant, the wheelhouse holds the CPU torch
# (docker/wheelhouse.sh); then `docker build`, reusing Docker's layer cache.
#
# Usage: docker/build.sh [--variant cpu|cuda] [--plain] [--tag NAME:TAG] [-- extra docker build args]
#   --variant cpu    torch ${TORCH_CPU_SPEC:-torch==2.13.0+cpu} from docker/wheelhouse/ (what CI builds)
#                    and OpenVINO ${OPENVINO_SPEC:-openvino==2026.4.1} (the CPU backend)
#   --variant cuda   the Dockerfile's default torch (PyPI's CUDA 12.1 build; several GB of downloads)
#   --plain          docker/Dockerfile.plain instead: `pip install torch nnunetv2` with all their
#                    dependencies, same base and predictor (the size comparison's reference)
# Default tags: flare-mri-seg:latest (cpu), flare-mri-seg:cuda, flare-mri-seg-plain:cpu / :cuda.
# Environment: BASE_IMAGE (default: the local stand-in flare-base:bookworm, built if missing; set it
# to python:3.11-slim where a registry is reachable), TORCH_CPU_SPEC, TORCH_CUDA_SPEC, OPENVINO_SPEC.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=cpu plain=0 tag=""
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) variant=$2; shift 2 ;;
        --plain) plain=1; shift ;;
        --tag) tag=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$variant" in cpu|cuda) ;; *) echo "build.sh: --variant is cpu or cuda, not $variant" >&2; exit 2 ;; esac

missing=""
[ -f predict.sh ] || missing="$missing predict.sh"
[ -f inference/__main__.py ] || missing="$missing inference/__main__.py"
[ -f weights/plans.json ] && [ -f weights/dataset.json ] || missing="$missing weights/{dataset,plans}.json"
if [ -n "$missing" ]; then
    echo "build.sh: missing:$missing. The image needs predict.sh, the predictor (inference/) and the default" \
         "nnU-Net model folder (weights/: dataset.json, plans.json, fold_*/checkpoint_final.pth)." >&2
    exit 1
fi

docker/engine.sh
base=${BASE_IMAGE:-flare-base:bookworm}
if [ "$base" = flare-base:bookworm ]; then
    docker/base_image.sh "$base"
fi

args=(--network host --build-arg "BASE_IMAGE=$base")
if [ "$variant" = cpu ]; then
    docker/wheelhouse.sh >/dev/null
    args+=(--build-arg "TORCH_SPEC=${TORCH_CPU_SPEC:-torch==2.13.0+cpu}")
    args+=(--build-arg "OPENVINO_SPEC=${OPENVINO_SPEC:-openvino==2026.4.1}")
elif [ -n "${TORCH_CUDA_SPEC:-}" ]; then
    args+=(--build-arg "TORCH_SPEC=$TORCH_CUDA_SPEC")
fi
if [ "$plain" = 1 ]; then
    args+=(-f docker/Dockerfile.plain)
    tag=${tag:-flare-mri-seg-plain:$variant}
else
    tag=${tag:-flare-mri-seg:$([ "$variant" = cpu ] && echo latest || echo cuda)}
fi

echo "build.sh: docker build ${args[*]} $* -t $tag ."
start=$(date +%s)
docker build "${args[@]}" "$@" -t "$tag" .
echo "build.sh: built $tag in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
