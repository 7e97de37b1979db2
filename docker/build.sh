#!/usr/bin/env bash
# Build the submission image on this machine: make sure an engine answers (docker/engine.sh), the local
# base stand-in exists (docker/base_image.sh) and, for the CPU variant, the wheelhouse holds the CPU torch
# (docker/wheelhouse.sh); then `docker build`, reusing Docker's layer cache.
#
# Usage: docker/build.sh [--variant cpu|cuda] [--plain] [--tag NAME:TAG] [-- extra docker build args]
#   --variant cpu    no torch: numpy, SimpleITK and OpenVINO ${OPENVINO_SPEC:-openvino==2026.4.1} run the
#                    model's IR (what CI builds); TORCH_CPU_SPEC=torch==2.13.0+cpu (from docker/wheelhouse/)
#                    puts the CPU torch back in
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
    torch_spec=${TORCH_CPU_SPEC:-}
    if [ "$plain" = 1 ]; then   # the plain reference is `pip install torch nnunetv2`
        torch_spec=${TORCH_CPU_SPEC:-torch==2.13.0+cpu}
    fi
    if [ -n "$torch_spec" ]; then
        TORCH_CPU_SPEC=$torch_spec docker/wheelhouse.sh >/dev/null
    fi
    args+=(--build-arg "TORCH_SPEC=$torch_spec")
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

builder_tag="${tag%%:*}-builder:${tag#*:}"
old_ids=$(docker image inspect -f '{{.Id}}' "$tag" "$builder_tag" 2>/dev/null || true)

# Docker's legacy builder (Debian bookworm has no buildx for BuildKit) prints a deprecation banner and
# bookkeeping lines per step; only the step lines and what the steps print are kept.
quiet_build() {
    docker build "$@" 2>&1 | sed -u -E \
        -e '/^DEPRECATED: The legacy builder/d' \
        -e '/^ +(Install the buildx|https:\/\/docs\.docker\.com\/go\/buildx|BuildKit is currently disabled|environment-variable)/d' \
        -e '/^ ---> (Running in |Using cache$|[0-9a-f]{12}$)/d' \
        -e '/^(Removing intermediate container|Sending build context|Successfully built)/d' \
        -e 's/^(Step [0-9]+\/[0-9]+ : .{80}).+$/\1 .../'
}

echo "build.sh: docker build ${args[*]} $* -t $tag ."
start=$(date +%s)
# The builder stage is built and tagged first, so that it is a named image the next build reuses as its
# layer cache, not an untagged one left behind (the full build below takes it from that cache).
builder_log=$(mktemp)
if ! quiet_build "${args[@]}" "$@" --target builder -t "$builder_tag" . >"$builder_log"; then
    echo "build.sh: the builder stage failed; its last lines:" >&2   # else the failure would be silent
    tail -n 30 "$builder_log" >&2
    rm -f "$builder_log"
    exit 1
fi
rm -f "$builder_log"
quiet_build "${args[@]}" "$@" -t "$tag" .

# Images of ours that this build replaced (now untagged) go; anything else's dangling images stay.
for id in $old_ids; do
    if [ "$(docker image inspect -f '{{len .RepoTags}}' "$id" 2>/dev/null)" = 0 ]; then
        docker image rm "$id" >/dev/null 2>&1 && echo "build.sh: removed the image this build replaced (${id:7:12})"
    fi
done

docker system df -v --format '{{json .Images}}' | python3 -c '
import json, sys
tag_id, builder_id, tag, builder, seconds = sys.argv[1:]
rows = {r["ID"]: r for r in json.load(sys.stdin)}   # an image with several tags is listed once
img = rows[tag_id]
size, shared = img["Size"], img["SharedSize"]
print(f"build.sh: built {tag} in {seconds}s: {size} ({shared} of it shared with other images)")
if builder_id in rows:
    extra = rows[builder_id]["UniqueSize"]
    print(f"build.sh: its builder stage, kept as {builder} as the layer cache of the next build, adds {extra}"
          f" on disk (docker image rm {builder} frees it; the next build is then a full one)")
' $(docker image inspect -f '{{.Id}}' "$tag" "$builder_tag") "$tag" "$builder_tag" "$(( $(date +%s) - start ))"
