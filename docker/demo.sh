#!/usr/bin/env bash
# Demo of the submission image, the way the FLARE organisers run it: build the image (docker/build.sh),
# then for every samples/inputs/<case>_0000.nii.gz a fresh inputs/ folder holding only that file and one
# container per case with the organisers' exact command (flare/contract.py), all writing into one
# outputs/ folder, one progress line per case (the container's output goes to <out>/logs/<case>.log).
# Finally the outputs are scored against samples/labels with the FLARE scorer (python -m evaluation) in
# the project's .venv, which .ci/venv.sh makes first when it is missing (the same one .ci/run uses).
#
# Usage: bash docker/demo.sh [--variant cpu|cuda] [--gpu N] [--samples DIR] [--out DIR]
#   --variant  cpu (default; CPU torch) or cuda (the submission image, CUDA 12.1 torch)
#   --gpu N    add the organisers' --gpus="device=N" (needs the NVIDIA container toolkit); default: CPU
#   --out DIR  where inputs/, outputs/ and scores.csv go (default outputs/demo)
#   --tag T    image tag (default flare-mri-seg:latest for cpu, flare-mri-seg:cuda for cuda)
set -euo pipefail
cd "$(dirname "$0")/.."

variant=cpu gpu="" samples=samples out=outputs/demo image=""
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) variant=$2; shift 2 ;;
        --gpu) gpu=$2; shift 2 ;;
        --samples) samples=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --tag) image=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
image=${image:-$([ "$variant" = cpu ] && echo flare-mri-seg:latest || echo flare-mri-seg:cuda)}

# The scorer's environment first: on a fresh machine this is the one long step (minutes, about 2 GB).
if ! .venv/bin/python -c 'import evaluation' 2>/dev/null; then
    echo "demo.sh: installing the project into .venv for the scorer (.ci/venv.sh; bash .ci/run reuses it)"
    bash .ci/venv.sh
fi

docker/build.sh --variant "$variant" --tag "$image"

shopt -s nullglob
cases=("$samples"/inputs/*_0000.nii.gz)
if [ ${#cases[@]} -eq 0 ]; then
    echo "demo.sh: no <case>_0000.nii.gz in $samples/inputs" >&2
    exit 1
fi
rm -rf "$out"
mkdir -p "$out/outputs" "$out/logs"
out=$(cd "$out" && pwd)
failed=0 i=0
for file in "${cases[@]}"; do
    i=$((i + 1))
    case_id=$(basename "$file" _0000.nii.gz)
    mkdir -p "$out/inputs/$case_id"
    cp "$file" "$out/inputs/$case_id/"
    # The organisers' command, from the project's single source of truth (flare/contract.py).
    mapfile -t cmd < <(python3 -c 'import sys; sys.path.insert(0, "."); from flare.contract import docker_run_command
print("\n".join(docker_run_command(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4],
                                   gpu=int(sys.argv[5]) if sys.argv[5] else None)))' \
        "$image" "flare-demo-$case_id" "$out/inputs/$case_id" "$out/outputs" "$gpu")
    if [ "$i" = 1 ]; then
        shown=""
        for arg in "${cmd[@]}"; do
            case "$arg" in *" "*) shown="$shown \"$arg\"" ;; *) shown="$shown $arg" ;; esac
        done
        echo "demo.sh: per case, the organisers' command (here for $case_id):"
        echo "\$${shown}"
    fi
    start=$(date +%s.%N)
    status=ok
    "${cmd[@]}" >"$out/logs/$case_id.log" 2>&1 || { status="FAILED (exit $?; see $out/logs/$case_id.log)"; failed=$((failed + 1)); }
    seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    echo "[$i/${#cases[@]}] $case_id: $status, ${seconds} s from docker run to exit"
done

echo
"$PWD/.venv/bin/python" -m evaluation -p "$out/outputs" -g "$samples/labels" -o "$out" -q
[ "$failed" = 0 ] || { echo "demo.sh: $failed case(s) failed" >&2; exit 1; }
