#!/usr/bin/env bash
# Install the project with its test dependencies into .venv (made if missing). Shared by .ci/run and
# docker/demo.sh (whose scorer needs it), so both make the same environment.
#
# torch: where no NVIDIA GPU is visible (no /dev/nvidia0, no `nvidia-smi -L`), its CPU build
# (${TORCH_CPU_SPEC:-torch==2.13.0+cpu}, about 4.5 GB smaller than the CUDA build with its nvidia-* wheels),
# with the matching CPU torchvision from ${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu} when that
# index answers. Where it does not, PyPI's torchvision is a CUDA build that cannot load beside CPU torch
# ("operator torchvision::nms does not exist") and is removed: nothing here imports it; only nnU-Net's
# Primus/EVA trainers do (through timm), and nnU-Net finds the standard nnUNetTrainer without importing
# them. TORCH_BUILD=cuda forces the default (CUDA) build, TORCH_BUILD=cpu the CPU one (replacing a CUDA
# torch already installed; otherwise the torch in an existing .venv is kept).
#
# Usage: .ci/venv.sh      (from anywhere; prints the venv's size at the end)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    # A clean install takes about 2 GB with CPU torch (6.5 GB with the CUDA build), plus about 2.5 GB
    # for the image build. Say so before pip fails half-way with "No space left on device".
    free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
    if [ "$free_gb" -lt 10 ]; then
        echo "CI: only ${free_gb} GB free on $(df -P . | awk 'NR==2 {print $6}'); the venv and the image" \
             "build need about 10 GB" >&2
        exit 1
    fi
    python3 -m venv .venv
fi
. .venv/bin/activate
pins=$(mktemp) log=$(mktemp)
trap 'rm -f "$pins" "$log"' EXIT
# pip's and the build backend's chatter goes to a log, shown when pip fails.
quiet_pip() {
    python -m pip install --quiet "$@" >"$log" 2>&1 && return 0
    tail -n 40 "$log" >&2
    return 1
}
quiet_pip --upgrade pip

has_gpu() { [ -e /dev/nvidia0 ] || nvidia-smi -L >/dev/null 2>&1; }
build=${TORCH_BUILD:-$(has_gpu && echo cuda || echo cpu)}
cpu_spec=${TORCH_CPU_SPEC:-torch==2.13.0+cpu}
cpu_vision=${TORCHVISION_CPU_SPEC:-torchvision==0.28.0+cpu}
# A torch already in .venv stays (swapping it under a venv in use would break running jobs), unless
# TORCH_BUILD asks for the other build explicitly: TORCH_BUILD=cpu replaces a CUDA build, and
# TORCH_BUILD=cuda (what .ci/run sets) replaces the CPU build that docker/demo.sh installed first.
if python -c 'import torch' 2>/dev/null; then
    have=$(python -c 'import torch; print("cuda" if torch.version.cuda else "cpu")')
    if [ -z "${TORCH_BUILD:-}" ] || [ "$TORCH_BUILD" = "$have" ]; then
        build=keep
    else
        echo "venv.sh: replacing the $have build of torch in .venv with the $build one (TORCH_BUILD=$TORCH_BUILD)"
        python -m pip uninstall --quiet --yes torch torchvision >/dev/null 2>&1 || true
    fi
fi
if [ "$build" = cpu ]; then
    if python -m pip install --quiet --retries 1 --timeout 20 \
            --extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}" \
            "$cpu_spec" "$cpu_vision" 2>/dev/null; then
        echo "venv.sh: CPU torch and torchvision ($cpu_spec, $cpu_vision)"
    elif quiet_pip "$cpu_spec"; then
        echo "venv.sh: CPU torch ($cpu_spec); no matching CPU torchvision reachable"
    else
        echo "venv.sh: no CPU torch build ($cpu_spec) reachable; installing the default (CUDA) build" >&2
    fi
fi
# Keep the torch already there (CPU or CUDA): nnunetv2 and timm would otherwise pull the default one.
# The public version only: `==2.13.0` matches an installed 2.13.0+cpu, while `==2.14.1+cu130` conflicts
# with this machine's pip cap `torch<=2.14.1` (a second `.ci/run` on the same .venv failed on it).
python -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' >"$pins" 2>/dev/null || : >"$pins"
quiet_pip -c "$pins" -e '.[dev]'

if python -m pip show --quiet torchvision 2>/dev/null && ! python -c 'import torchvision' 2>/dev/null; then
    python -m pip uninstall --quiet --yes torchvision
    echo "venv.sh: removed torchvision: it does not load beside $(python -c 'import torch; print(torch.__version__)')" \
         "(nothing here imports it; see the comment at the top of .ci/venv.sh)"
fi
echo "venv.sh: .venv ready: torch $(python -c 'import torch; print(torch.__version__)'), $(du -sh .venv | cut -f1)"
