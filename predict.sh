#!/bin/sh
# FLARE 2024 Task 3 entry point, run by the organisers as `sh predict.sh` from /workspace:
# segments every /workspace/inputs/<case>_0000.nii.gz into /workspace/outputs/<case>.nii.gz with the
# model in /workspace/weights. GPU selection is the organisers' (`--gpus`); nothing here sets
# CUDA_VISIBLE_DEVICES. Without a GPU, or in the CPU image (no torch), it runs on the CPU: OpenVINO on the
# model's IR, in bf16 where the CPU computes bfloat16 natively and float32 elsewhere (the first output line
# says which and why); on a GPU (CUDA image) torch with fp16 autocast. Logits sum in float32.
# Arguments given to predict.sh come last and win (e.g. `sh predict.sh --precision bf16`).
set -e
# The container runs as root; files must stay readable by the host user who mounted outputs/.
umask 022
cd "$(dirname "$0")"
exec python -m inference -i /workspace/inputs -o /workspace/outputs --backend auto --precision auto "$@"
