"""The organisers' container contract (FLARE 2023/2024), as one source of truth.

A submission is run once per case with exactly this command; `predict.sh` runs under `sh` from the
image's working directory /workspace, reads /workspace/inputs/<case>_0000.nii.gz and must write
/workspace/outputs/<case>.nii.gz with the input's geometry.
"""
from __future__ import annotations

WORKDIR = "/workspace"
INPUTS = f"{WORKDIR}/inputs"
OUTPUTS = f"{WORKDIR}/outputs"
INPUT_SUFFIX = "_0000.nii.gz"
OUTPUT_SUFFIX = ".nii.gz"
SHM_SIZE = "28gb"
MEMORY_LIMIT = "28G"


def docker_run_command(image: str, name: str, inputs_dir: str, outputs_dir: str,
                       gpu: int | None = None, extra: list[str] | None = None) -> list[str]:
    """argv of the organisers' `docker container run` for one case.

    `gpu` None leaves out `--gpus` (CPU run); `extra` goes before the image name (e.g. --network none).
    """
    cmd = ["docker", "container", "run", f"--shm-size={SHM_SIZE}", "-m", MEMORY_LIMIT]
    if gpu is not None:
        cmd.append(f'--gpus=device={gpu}')
    cmd += ["--name", name, "--rm",
            "-v", f"{inputs_dir.rstrip('/')}/:{INPUTS}/",
            "-v", f"{outputs_dir.rstrip('/')}/:{OUTPUTS}/"]
    cmd += list(extra or [])
    cmd += [f"{image}:latest" if ":" not in image else image, "/bin/bash", "-c", "sh predict.sh"]
    return cmd
