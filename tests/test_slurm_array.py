"""labeltransfer/slurm/pseudolabel.sbatch under a real Slurm cluster (CI starts a one-node one with
.ci/slurm_cluster.sh; skipped when `sinfo` shows no usable node).

A job array pseudo-labels phantoms with a small random-weight nnU-Net model, one shard per array task;
one task is cancelled with scancel after its first label and resubmitted alone. Every shard must
complete, and the labels must be the ones a single process writes over the whole folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
SBATCH = ROOT / "labeltransfer" / "slurm" / "pseudolabel.sbatch"
PARTS = 2
CASES = 4          # 2 per shard: a shard can be caught after its first label and before its last


def _cluster_ready() -> str | None:
    """None when Slurm answers with a node that can take work, else why not."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm client (sinfo, sbatch) on PATH"
    try:
        r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    states = r.stdout.split()
    if r.returncode != 0 or not any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states):
        return f"no usable Slurm node (sinfo: {(r.stdout + r.stderr).strip() or 'nothing'})"
    return None


def _sbatch(args: list[str], env: dict) -> str:
    r = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, env=env,
                       check=True, timeout=60)
    return r.stdout.strip().split(";")[0]


def _queued(job: str) -> list[str]:
    """'JOBID_TASK STATE' of the job's tasks still queued or running."""
    r = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i %T"], capture_output=True, text=True,
                       timeout=30)
    return r.stdout.split("\n") if r.returncode == 0 and r.stdout.strip() else []


def _wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _labels(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.glob("*.nii.gz")}


def test_job_array_with_a_cancelled_and_resubmitted_task_matches_one_process(tmp_path):
    why = _cluster_ready()
    if why:
        pytest.skip(why)
    from testsupport.model_folder import write_preset

    # Small cases, but the last one (shard 1's second) is 8 times larger: task 1 takes a while after
    # its first label, so scancel reliably catches it mid-way however fast the predictor is.
    for first, num, size in ((1, CASES - 1, "40,32,20"), (CASES, 1, "80,64,40")):
        subprocess.run([sys.executable, "-m", "phantoms", "-o", str(tmp_path / "phantoms"), "-n", str(num),
                        "--first", str(first), "--size", size, "--spacing", "3,3,4", "-q"],
                       check=True, timeout=300)
    images = tmp_path / "phantoms" / "imagesTr"
    model = write_preset(tmp_path / "model", "tiny")
    out, logs = tmp_path / "array", tmp_path / "logs"
    logs.mkdir()
    tool_args = [str(images), str(out), "--model", str(model), "--parts", str(PARTS), "--device", "cpu", "-q"]
    env = {**os.environ, "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    shard1 = {f"phantom_{i:04d}.nii.gz" for i in range(2, CASES + 1, PARTS)}   # sorted ids, round robin

    job = _sbatch([f"--array=0-{PARTS - 1}", f"--output={logs}/%A_%a.log", f"--chdir={tmp_path}",
                   str(SBATCH), *tool_args], env)
    try:
        # Task 1 is cancelled once its first label is in place, while its other cases are still to come.
        def first_label_of_task1():
            done = shard1 & set(_labels(out))
            if not done and not _queued(job):   # the array ended without a label: say why at once
                logs_text = "\n".join(p.read_text()[-2000:] for p in sorted(logs.glob("*.log")))
                raise AssertionError(f"array job {job} left the queue before task 1 wrote a label:\n{logs_text}")
            return done
        _wait_for(first_label_of_task1, 600, f"the first label of task {job}_1")
        subprocess.run(["scancel", f"{job}_1"], check=True, timeout=30)
        _wait_for(lambda: not _queued(job), 600, f"array job {job} to leave the queue", poll_s=0.5)
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
    cut_short = shard1 - set(_labels(out))
    assert cut_short, "task 1 finished before scancel reached it: nothing was cancelled mid-way"
    assert "CANCELLED" in (logs / f"{job}_1.log").read_text()
    assert json.loads((out / f"pseudolabel_part0of{PARTS}.json").read_text())["failed"] == {}

    # Resubmitted alone, task 1 does only what is left of its shard.
    again = _sbatch(["--array=1", f"--output={logs}/%A_%a.log", f"--chdir={tmp_path}", str(SBATCH),
                     *tool_args], env)
    _wait_for(lambda: not _queued(again), 600, f"resubmitted task {again}_1", poll_s=0.5)
    report = json.loads((out / f"pseudolabel_part1of{PARTS}.json").read_text())
    assert report["failed"] == {} and set(report["skipped"]) == {n[:-7] for n in shard1 - cut_short}
    assert {f"{c}.nii.gz" for c in report["done"]} == cut_short, (logs / f"{again}_1.log").read_text()

    # One process over the whole folder writes the same labels.
    ref = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "labeltransfer", "pseudolabel", str(images), str(ref),
                    "--model", str(model), "--device", "cpu"], check=True, env=env, timeout=600,
                   capture_output=True)
    got, want = _labels(out), _labels(ref)
    assert sorted(got) == sorted(want) and len(got) == CASES
    for name in want:
        a, b = sitk.ReadImage(str(got[name])), sitk.ReadImage(str(want[name]))
        assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)), name
        assert (a.GetSize(), a.GetSpacing(), a.GetOrigin(), a.GetDirection()) == \
               (b.GetSize(), b.GetSpacing(), b.GetOrigin(), b.GetDirection()), name
