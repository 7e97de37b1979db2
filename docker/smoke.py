"""Run the built image the way the FLARE organisers do, once per sample case, and check each output.

For every `<case>_0000.nii.gz` in SAMPLES/inputs: a fresh inputs/ folder holding only that file, an empty
outputs/ folder, and the organisers' exact `docker container run` (flare.contract.docker_run_command,
without --gpus; the first case also with --network none). Checks: the container exits 0, writes
outputs/<case>.nii.gz, readable by any user, with the input's geometry (size, spacing, origin, direction),
and its mean DSC over the 13 organs against SAMPLES/labels/<case>.nii.gz, scored as the official FLARE
scorer does (evaluation.score_case), is at least --min-dice. One more run on
an empty inputs/ must exit 0 and say so.

When every check passes, a record (image id, sha256 of the sample files, threshold, results) is written
to --record (default build/docker-smoke.json): tests/test_docker.py skips repeating the container runs
for exactly that image and those samples, so CI runs each container once.

Usage, from the repository root with the project installed (`pip install -e .`, as .ci/run does; it
imports evaluation/, flare/ and inference/):

    python docker/smoke.py [--image flare-mri-seg] [--samples samples] [--min-dice 0.8]

It runs by path, not as `python -m`, because docker/ is not a Python package: it holds the image's
build inputs.
Exit status 0 when every check passed, 1 otherwise (each failure is printed).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from evaluation import score_case
from flare.contract import INPUT_SUFFIX, OUTPUT_SUFFIX, docker_run_command
from inference.files.atomic import write_json
from inference.files.cases import find_cases
from inference.files.reading import same_geometry

DEFAULT_RECORD = Path(__file__).resolve().parent.parent / "build" / "docker-smoke.json"


@dataclass
class ContainerRun:
    """Outcome of one container run on one sample case; `problems` empty means it passed."""
    case: str
    seconds: float
    problems: list[str] = field(default_factory=list)
    dice: dict[str, float] = field(default_factory=dict)  # official DSC per organ ("Liver_DSC": ...)
    log: str = ""

    @property
    def mean_dice(self) -> float:
        values = [v for v in self.dice.values() if not np.isnan(v)]
        return float(np.mean(values)) if values else float("nan")


def sample_cases(samples: Path) -> list[str]:
    """Case ids of SAMPLES/inputs/<case>_0000.nii.gz, sorted; raises when there are none."""
    inputs = samples / "inputs"
    cases = [c.case_id for c in find_cases(inputs, num_channels=1, file_ending=OUTPUT_SUFFIX)[0]]
    if not cases:
        raise FileNotFoundError(f"{inputs}: no <case>{INPUT_SUFFIX} sample files")
    return cases


def geometry_problems(reference: sitk.Image, output: sitk.Image) -> list[str]:
    """Differences in size, spacing, origin or direction between two images (empty when equal), with
    the repository's one geometry tolerance (inference.files.reading.same_geometry)."""
    why = same_geometry(reference, output)
    return [f"output grid differs from the input's: {why}"] if why else []


def image_id(image: str) -> str:
    """Content id of a local image (sha256:...); raises CalledProcessError when it does not exist."""
    ref = image if ":" in image else f"{image}:latest"
    return subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", ref], capture_output=True,
                          text=True, check=True).stdout.strip()


def record_key(image: str, samples: Path, min_dice: float) -> dict:
    """What a passed smoke run vouches for: the image's content id, every sample file's sha256 and the
    threshold. Equal keys mean the same checks on the same image and data."""
    files = sorted(p for sub in ("inputs", "labels") for p in (samples / sub).glob("*.nii.gz"))
    return {"image_id": image_id(image), "min_dice": min_dice,
            "samples": {p.relative_to(samples).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in files}}


def passed_before(image: str, samples: Path, min_dice: float, record: Path = DEFAULT_RECORD) -> bool:
    """True when `record` says a full smoke run passed on this very image and these samples."""
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    return saved.get("key") == record_key(image, samples, min_dice)


def run_container(image: str, name: str, inputs: Path, outputs: Path,
                  extra: list[str] | None = None, timeout: float = 1800) -> tuple[int, str, float]:
    """The organisers' command (no --gpus) on one inputs/outputs pair: (exit code, output, seconds)."""
    cmd = docker_run_command(image, name, str(inputs), str(outputs), gpu=None, extra=extra)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        return 124, f"timed out after {timeout}s", time.perf_counter() - start
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def check_case(image: str, samples: Path, case: str, workdir: Path, min_dice: float,
               network_none: bool = False) -> ContainerRun:
    """Run one container on one sample case and check its output (see the module docstring)."""
    inputs, outputs = workdir / case / "inputs", workdir / case / "outputs"
    inputs.mkdir(parents=True)
    outputs.mkdir(parents=True)
    source = samples / "inputs" / f"{case}{INPUT_SUFFIX}"
    shutil.copy2(source, inputs / source.name)
    name = "flare-smoke-" + "".join(c if c.isalnum() or c in "_.-" else "-" for c in case) + f"-{os.getpid()}"
    extra = ["--network", "none"] if network_none else None
    code, log, seconds = run_container(image, name, inputs, outputs, extra)
    result = ContainerRun(case, seconds, log=log)
    if code != 0:
        result.problems.append(f"container exited {code}")
        return result
    out_file = outputs / f"{case}{OUTPUT_SUFFIX}"
    if not out_file.is_file():
        result.problems.append(f"{out_file.name} not written (outputs/: "
                               f"{sorted(p.name for p in outputs.iterdir())})")
        return result
    mode = out_file.stat().st_mode
    if not mode & stat.S_IROTH:
        result.problems.append(f"{out_file.name} not readable by other users (mode {oct(mode & 0o777)})")
    prediction, reference = sitk.ReadImage(str(out_file)), sitk.ReadImage(str(source))
    result.problems += geometry_problems(reference, prediction)
    truth_file = samples / "labels" / f"{case}{OUTPUT_SUFFIX}"
    if not truth_file.is_file():
        result.problems.append(f"{truth_file}: ground truth missing")
        return result
    if not result.problems:
        scores = score_case(str(out_file), str(truth_file))
        result.dice = {k: v for k, v in scores.items() if k.endswith("_DSC")}
        if not result.mean_dice >= min_dice:  # also catches NaN
            result.problems.append(f"mean DSC {result.mean_dice:.3f} < {min_dice}")
    return result


def check_empty_inputs(image: str, workdir: Path) -> list[str]:
    """An empty inputs/ must exit 0, write nothing and say so; returns the problems."""
    inputs, outputs = workdir / "empty" / "inputs", workdir / "empty" / "outputs"
    inputs.mkdir(parents=True)
    outputs.mkdir(parents=True)
    code, log, _ = run_container(image, f"flare-smoke-empty-{os.getpid()}", inputs, outputs,
                                 ["--network", "none"])
    problems = []
    if code != 0:
        problems.append(f"empty inputs/: container exited {code}: {log.strip()[-500:]}")
    if list(outputs.iterdir()):
        problems.append(f"empty inputs/: wrote {sorted(p.name for p in outputs.iterdir())}")
    if "nothing to do" not in log:
        problems.append(f"empty inputs/: no 'nothing to do' message in: {log.strip()[-500:]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="flare-mri-seg", help="image name (':latest' added if no tag)")
    parser.add_argument("--samples", type=Path, default=Path("samples"),
                        help="folder with inputs/<case>_0000.nii.gz and labels/<case>.nii.gz")
    parser.add_argument("--min-dice", type=float, default=0.8, help="lowest mean DSC per case")
    parser.add_argument("--record", type=Path, default=DEFAULT_RECORD,
                        help="where to write the record of a full pass (default build/docker-smoke.json)")
    args = parser.parse_args(argv)

    cases = sample_cases(args.samples)
    key = record_key(args.image, args.samples, args.min_dice)  # before the runs: the image is fixed
    args.record.unlink(missing_ok=True)
    results = []
    failures = 0
    with tempfile.TemporaryDirectory(prefix="flare-smoke-") as tmp:
        for i, case in enumerate(cases):
            result = check_case(args.image, args.samples, case, Path(tmp), args.min_dice,
                                network_none=(i == 0))
            organs = ", ".join(f"{k[:-4]} {v:.3f}" for k, v in result.dice.items())
            status = "ok" if not result.problems else "FAILED: " + "; ".join(result.problems)
            print(f"[{i + 1}/{len(cases)}] {case}: {status} [{result.seconds:.1f}s{', --network none' if i == 0 else ''}; "
                  f"mean DSC {result.mean_dice:.3f}: {organs}]", flush=True)
            results.append({"case": case, "seconds": round(result.seconds, 2), "dsc": result.dice,
                            "problems": result.problems})
            if result.problems:
                failures += 1
                print("  container output:\n    " + result.log.strip().replace("\n", "\n    "), flush=True)
        problems = check_empty_inputs(args.image, Path(tmp))
        print("empty inputs/: " + ("ok" if not problems else "FAILED: " + "; ".join(problems)), flush=True)
        failures += bool(problems)
    print(f"docker smoke: {len(cases) + 1 - failures} of {len(cases) + 1} checks passed")
    if failures:
        return 1
    write_json(args.record, {"key": key, "image": args.image, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
