#!/usr/bin/env bash
# Size of our image next to the plain reference (docker/Dockerfile.plain: `pip install torch nnunetv2`,
# same base, predictor, model and predict.sh), uncompressed (`docker image inspect .Size`) and as shipped
# (`docker save | gzip | wc -c`). Prints a Markdown table.
#
# Usage: docker/image_sizes.sh [--json] [cpu] [cuda]     (default: cpu)
#   --json: also print the sizes in bytes as one JSON line at the end, the line that
#   `python -m benchmarks.record image_sizes_cpu -- bash docker/image_sizes.sh --json cpu` keeps
#   (benchmarks/results/commands/<machine>/image_sizes_cpu.json; the README's sizes are rendered from it).
#   Builds whatever image of the pair is missing with docker/build.sh (cuda: several GB of downloads).
#   SIZES_REBUILD=1 rebuilds (cache reused) even when the tags exist.
set -euo pipefail
cd "$(dirname "$0")/.."
json=0
if [ "${1:-}" = --json ]; then json=1; shift; fi
[ $# -gt 0 ] || set -- cpu

human() { awk -v b="$1" 'BEGIN { printf "%.2f GB", b / 1e9 }'; }
ours_tag() { [ "$1" = cpu ] && echo flare-mri-seg:latest || echo flare-mri-seg:cuda; }

rows=()
entries=()
for variant in "$@"; do
    ours=$(ours_tag "$variant") plain=flare-mri-seg-plain:$variant
    for pair in "$ours:" "$plain:--plain"; do
        tag=${pair%:*} flag=${pair##*:}
        if [ "${SIZES_REBUILD:-0}" = 1 ] || ! docker image inspect "$tag" >/dev/null 2>&1; then
            # shellcheck disable=SC2086
            docker/build.sh --variant "$variant" $flag --tag "$tag" >&2
        fi
    done
    declare -A raw gz
    for tag in "$ours" "$plain"; do
        raw[$tag]=$(docker image inspect -f '{{.Size}}' "$tag")
        echo "image_sizes.sh: docker save $tag | gzip ..." >&2
        gz[$tag]=$(docker save "$tag" | gzip -c | wc -c)
    done
    torch=$(docker run --rm --network none "$ours" python -c \
        'import importlib.util as u; print(__import__("torch").__version__ if u.find_spec("torch") else "none")')
    ratio_raw=$(awk -v a="${raw[$ours]}" -v b="${raw[$plain]}" 'BEGIN { printf "%.0f %%", 100 * a / b }')
    ratio_gz=$(awk -v a="${gz[$ours]}" -v b="${gz[$plain]}" 'BEGIN { printf "%.0f %%", 100 * a / b }')
    entries+=("{\"variant\": \"$variant\", \"torch\": \"$torch\", \"ours_bytes\": ${raw[$ours]}, \"plain_bytes\": ${raw[$plain]}, \"ours_gzip_bytes\": ${gz[$ours]}, \"plain_gzip_bytes\": ${gz[$plain]}}")
    rows+=("| $variant (torch $torch) | $(human "${raw[$ours]}") | $(human "${raw[$plain]}") | $ratio_raw | $(human "${gz[$ours]}") | $(human "${gz[$plain]}") | $ratio_gz |")
    unset raw gz
done

echo "| variant | ours | plain | ours/plain | ours, save+gzip | plain, save+gzip | ours/plain |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "base image: ${BASE_IMAGE:-flare-base:bookworm}; 1 GB = 10^9 bytes; measured $(date -u +%Y-%m-%d) on $(uname -m)"
if [ "$json" = 1 ]; then
    (IFS=,; echo "{\"base_image\": \"${BASE_IMAGE:-flare-base:bookworm}\", \"variants\": [${entries[*]}]}")
fi
