"""One-call GPU check: everything the project needs measured on an NVIDIA GPU, within a time budget.

    python -m benchmarks.flare.gpu_check --prepare-wheels .whl [--with-nnunet]     # on a networked machine
    python -m benchmarks.flare.gpu_check -o OUT --wheels .whl [--budget-s 420]      # on the GPU machine
    python -m benchmarks.flare.gpu_check --out OUT --device cpu                     # its rehearsal on a CPU (CI)

For a machine with an NVIDIA GPU and a CUDA torch but no network, no Docker and no SimpleITK (the device
machine of docs/gpu_check.md). In order, each step cut or skipped when the budget runs short:
  1. install the wheels made beforehand (pip --no-index --no-deps --target, a temporary folder);
  2. the CUDA-only tests (pytest -m cuda);
  3. CPU-vs-GPU agreement on the default model (weights/) and on a paper-architecture random model,
     and the GPU with the 4096 MiB budget against the GPU without one;
  4. a per-stage profile of the largest Table 6 volume (benchmarks.flare.profile_case, budget 4096 MiB);
  5. Table 6 (benchmarks.flare.harness in direct mode, NVML every 0.1 s): ours and, where its import chain is
     installed, nnU-Net's predictor, smallest volumes first, as far as the budget allows;
  6. the sampler's real period (benchmarks.flare.sampler_period, where that module exists).
Writes at most 8 files into OUT (gpu_check.json, gpu_check.md, <run>_Efficiency.csv, <run>_memory.png),
rewritten after every step so that a run stopped early still leaves its results; each names the GPU,
driver, torch and CUDA versions. Child processes still running at the hard deadline (budget + 45 s)
are ended by their pid. `--device cpu` (or `--dry-run`) rehearses it: the same steps on the CPU with a tiny
model and small volumes, the child processes without SimpleITK as on the GPU machine (nibabel I/O);
CUDA-only tests come back skipped. Exit 0: every step that ran passed; 1: a test, an agreement or a run failed; 2: setup error.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, cpu_description, dice_per_label, write_bytes, write_text

from .gpu_wheels import MIB, install_wheels, prepare_wheels

HARD_MARGIN_S = 45
GPU_BUDGET_MIB = 4096
MAX_FILES = 8
RESERVED_FILES = 3   # gpu_check.json, gpu_check.md, and gpu_check.log that the device call's `tee` writes
AGREEMENT_VOXELS = 0.99       # share of voxels labelled as the CPU reference labels them
AGREEMENT_LABEL_DICE = 0.97   # every foreground label's Dice with the CPU reference (benchmarks.studies.path_agreement's target)


# --- environment and report ---------------------------------------------------------------------------

def environment(rehearsal: bool) -> dict:
    import torch

    from .sampler import nvml_probe
    gpu, why = nvml_probe(0)
    driver = None
    try:
        import pynvml
        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
    except Exception:  # no NVIDIA driver: the CPU rehearsal
        pass
    # No torch.cuda call that would create a context here: this process stays off the GPU, so the
    # whole-device samples of the runs it starts count only those runs.
    cuda = torch.cuda.is_available() and not rehearsal
    env = {"gpu": gpu or f"none ({why})", "driver": driver, "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "python": platform.python_version(), "cpu": cpu_description(), "rehearsal": rehearsal,
           "device": "cuda" if cuda else "cpu"}
    env["line"] = (f"GPU {env['gpu']}; driver {driver or '-'}; torch {env['torch']}; CUDA {env['cuda'] or '-'}; "
                   f"{env['cpu']}; Python {env['python']}" + ("; REHEARSAL on the CPU" if rehearsal else ""))
    return env


class Report:
    """gpu_check.json and gpu_check.md in OUT, rewritten after every step; the run's other files
    (CSV, PNG) are copied in by `add_file`, never more than MAX_FILES in all."""

    def __init__(self, out: Path, env: dict, budget_s: float):
        self.out, self.data = out, {"environment": env, "budget_s": budget_s, "steps": {}, "files": []}
        out.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict:
        return self.data["environment"]

    def step(self, name: str, result: dict) -> None:
        self.data["steps"][name] = result
        self.save()

    def add_file(self, src: Path, name: str, with_environment: bool = False) -> None:
        if name not in self.data["files"] and len(self.data["files"]) + RESERVED_FILES >= MAX_FILES:
            return  # gpu_check.json, .md and the console log the device call tees always fit
        if with_environment and name.endswith(".csv"):   # a column that names GPU, driver, torch, CUDA
            import csv
            import io
            rows = list(csv.reader(io.StringIO(src.read_text())))
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(
                [rows[0] + ["Environment"]] + [r + [self.env["line"]] for r in rows[1:]])
            write_text(self.out / name, text.getvalue())
        else:
            write_bytes(self.out / name, src.read_bytes())
        if name not in self.data["files"]:
            self.data["files"].append(name)
        self.save()

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.time() - self.data.setdefault("started", time.time()), 1)
        write_text(self.out / "gpu_check.json", json.dumps(self.data, indent=1, default=str))
        write_text(self.out / "gpu_check.md", markdown(self.data))


def markdown(data: dict) -> str:
    env, steps = data["environment"], data["steps"]
    lines = ["# GPU check", "", f"Environment: {env['line']}", "",
             f"Budget {data['budget_s']:.0f} s, elapsed {data.get('elapsed_s', 0):.0f} s. Files: "
             + ", ".join(["gpu_check.json", "gpu_check.md", *data["files"]]) + ".", ""]
    lines += ["| Step | Status | Seconds | Summary |", "|---|---|---:|---|"]
    for name, s in steps.items():
        lines.append(f"| {name} | {s.get('status', '')} | {s.get('seconds', 0):.1f} | {s.get('summary', '')} |")
    agree = steps.get("agreement", {}).get("rows")
    if agree:
        lines += ["", "## Agreement with the CPU reference", "",
                  "| Model | Image (x, y, z) | Run | Engine | Voxel agreement | Mean Dice | Lowest label Dice | "
                  "Seconds | Torch peak allocated (MiB) |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
        for r in agree:
            lines.append(f"| {r['model']} | {r['image_size']} | {r['run']} | {r.get('engine', '')} | "
                         f"{r['agreement']:.6f} | {r['mean_dice']:.5f} | {r.get('lowest_dice', 1.0):.5f} | "
                         f"{r['seconds']:.2f} | {r.get('torch_peak_mib') or '-'} |")
    prof = steps.get("profile", {}).get("markdown")
    if prof:
        lines += ["", "## Profile of one large case", "", prof]
    t6 = steps.get("table6", {}).get("markdown")
    if t6:
        lines += ["", "## Table 6", "", t6]
    tests = steps.get("cuda_tests", {}).get("tests")
    if tests:
        lines += ["", "## CUDA-only tests", "", "| Test | Outcome | Message |", "|---|---|---|"]
        lines += [f"| {t['test']} | {t['outcome']} | {t.get('message', '')[:200]} |" for t in tests]
    return "\n".join(lines) + "\n"


# --- the steps -----------------------------------------------------------------------------------------

class Clock:
    def __init__(self, budget_s: float):
        self.start, self.budget_s = time.time(), budget_s

    def left(self) -> float:
        return self.budget_s - (time.time() - self.start)


def child_env(site: Path | None, hidden: Path | None = None) -> dict:
    """The child processes' environment: the repository and the installed wheels on PYTHONPATH, and
    `hidden` (a folder of modules that refuse to import) first."""
    paths = ([str(hidden)] if hidden else []) + [str(REPO)] + ([str(site)] if site else []) + \
        [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def without_simpleitk(folder: Path) -> Path:
    """A folder whose `SimpleITK` package raises ImportError: first on a child's PYTHONPATH it gives the
    child the GPU machine's situation, where SimpleITK is not installed."""
    package = folder / "SimpleITK"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('raise ImportError("SimpleITK is not installed on the GPU machine '
                                         '(benchmarks.flare.gpu_check rehearsal)")\n')
    return folder


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def cuda_test_files() -> list[Path]:
    return sorted(p for p in (REPO / "tests").glob("test_*.py") if "mark.cuda" in p.read_text())


def run_cuda_tests(work: Path, env: dict, timeout: float, simpleitk: bool = True) -> dict:
    """pytest -m cuda on the files that hold CUDA tests. Without SimpleITK, files importing it are left
    out and listed (`not_run`); any other file that cannot be imported is a collection error."""
    files, not_run = cuda_test_files(), []
    if not simpleitk:
        not_run = [f.name for f in files if "import SimpleITK" in f.read_text()]
        files = [f for f in files if f.name not in not_run]
    junit = work / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "--junitxml", str(junit),
           "--continue-on-collection-errors", *map(str, files)]
    try:
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        tail = (r.stdout + r.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "summary": f"pytest did not finish in {timeout:.0f} s", "tests": []}
    tests = []
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    outcome, message = tag, (el.get("message") or el.text or "")
                    break
            tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                          "message": message.strip().splitlines()[0] if message.strip() else ""})
    counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failure", "error", "skipped")}
    bad = counts["failure"] + counts["error"]
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no tests"
    if not_run:
        summary += f"; not run (they import SimpleITK, absent here): {', '.join(not_run)}"
    return {"status": "failed" if bad else "ok", "tests": tests, "files": [f.name for f in files],
            "not_run": not_run, "summary": summary, "pytest_tail": tail, "returncode": r.returncode}


def compare_labels(labels: np.ndarray, reference: np.ndarray) -> dict:
    """Voxel agreement and per-label Dice (every foreground label in either map) of `labels` against an
    independent `reference`; passes when both reach AGREEMENT_VOXELS and AGREEMENT_LABEL_DICE."""
    present = sorted((set(np.unique(reference).tolist()) | set(np.unique(labels).tolist())) - {0})
    dices = dice_per_label(labels, reference, present)
    agreement = float((labels == reference).mean())
    lowest = min(dices.values(), default=1.0)
    return {"agreement": agreement, "mean_dice": float(np.mean(list(dices.values()))) if dices else 1.0,
            "lowest_dice": lowest, "labels_present": len(present),
            "passed": agreement >= AGREEMENT_VOXELS and lowest >= AGREEMENT_LABEL_DICE}


def agreement(cases: list[tuple[str, Path, np.ndarray, tuple]], device: str) -> dict:
    """Per model: the reference, the CPU's default path in float32 (OpenVINO where the model has IR and
    openvino is installed, else torch), against the torch engine on `device` without a budget and with the 4096 MiB
    budget. On a CPU rehearsal the torch engine runs on the CPU: a different engine from the reference
    wherever the model carries IR, so the comparison can fail."""
    import torch

    from inference.api import segment_array
    from inference.memory.gpu_budget import GpuBudget
    from inference.loading import load_model
    rows, failed = [], False
    # the reference in float32 (precision auto is bf16 on CPUs with native bfloat16); the torch engine
    # with its own auto precision (fp16 autocast on CUDA, float32 on the CPU)
    runs = (("reference: CPU, default path, fp32", "cpu", None, "auto", "fp32"),
            (f"{device}, torch engine", device, None, "torch", "auto"),
            (f"{device}, torch engine, budget {GPU_BUDGET_MIB} MiB", device, GPU_BUDGET_MIB, "torch", "auto"))
    for label, model_dir, data, spacing in cases:
        ref = None
        for run, dev, budget_mib, backend, precision in runs:
            model = load_model(model_dir, device=dev, backend=backend, precision=precision)
            budget = GpuBudget(budget_mib, dev) if budget_mib else None
            if dev == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            labels = segment_array(data, spacing, model, budget=budget)
            if dev == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            peak = round(torch.cuda.max_memory_allocated() / MIB) if dev == "cuda" else None
            if budget is not None and budget.active:
                torch.cuda.set_per_process_memory_fraction(1.0)   # the next run has no cap
            row = {"model": label, "image_size": ", ".join(map(str, data.shape[1:][::-1])), "run": run,
                   "engine": model.plan.backend, "seconds": seconds, "torch_peak_mib": peak}
            if ref is None:
                ref = labels
                row.update(agreement=1.0, mean_dice=1.0, lowest_dice=1.0, reference=True,
                           labels_present=len(set(np.unique(labels).tolist()) - {0}))
            else:
                verdict = compare_labels(labels, ref)
                failed |= not verdict.pop("passed")
                row.update(verdict)
            rows.append(row)
            del model
    compared = [r for r in rows if not r.get("reference")]
    worst = min(r["agreement"] for r in compared)
    lowest = min(r["lowest_dice"] for r in compared)
    return {"status": "failed" if failed else "ok", "rows": rows,
            "summary": f"against the CPU reference: lowest voxel agreement {worst:.6f} (pass >= {AGREEMENT_VOXELS}), "
                       f"lowest per-label Dice {lowest:.4f} (pass >= {AGREEMENT_LABEL_DICE})"}


def in_child(fn, *args, timeout: float):
    """fn(*args) in a fresh (spawned) process: its CUDA context and cached memory go when it ends, so
    they are not on the device during the later measurements."""
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(1) as pool:
        try:
            return pool.apply_async(fn, args).get(timeout=timeout)
        except mp.TimeoutError:
            return {"status": "timeout", "summary": f"did not finish in {timeout:.0f} s"}
        except Exception as e:  # the step fails, the check goes on
            return {"status": "failed", "summary": f"{type(e).__name__}: {str(e)[:300]}"}


def write_volume(folder: Path, case: str, size_xyz, seed: int, spacing_xyz=None) -> Path:
    """An MRI-like volume (benchmarks.flare.volumes; Table 6's spacing rule unless given) written with nibabel."""
    from .nifti_io import write_volume as write_nifti
    from .volumes import mri_like_array, table6_spacing
    path = folder / f"{case}_0000.nii.gz"
    if not path.is_file():
        spacing = tuple(spacing_xyz) if spacing_xyz else table6_spacing(size_xyz)
        write_nifti(mri_like_array(size_xyz, spacing, seed), spacing, path)
    return path


def run_profile(image: Path, model: Path, device: str, env: dict, work: Path, timeout: float,
                nibabel: bool = False) -> dict:
    out_json = work / "profile.json"
    cmd = [sys.executable, "-m", "benchmarks.flare.profile_case", str(image), "-m", str(model), "--device", device,
           "--gpu-memory-budget", str(GPU_BUDGET_MIB), "--json", str(out_json)] + (["--nibabel"] if nibabel else [])
    try:
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "summary": f"profile did not finish in {timeout:.0f} s"}
    if r.returncode != 0 or not out_json.is_file():
        return {"status": "failed", "summary": f"rc {r.returncode}", "tail": (r.stdout + r.stderr)[-2000:]}
    from .profile_case import markdown as profile_md
    res = json.loads(out_json.read_text())
    g = res.get("gpu_memory") or {}
    summary = f"{res['case']} ({', '.join(map(str, res['image_size']))}): {res['total_seconds']:.2f} s"
    if g:
        summary += (f"; max {g['max_mib']:,.0f} MiB, AUC above {g['tolerance_mib']:,.0f} MiB "
                    f"{g['auc_above_tolerance_mib_s']:,.0f} MiB·s")
    return {"status": "ok", "summary": summary, "profile": res, "markdown": profile_md(res),
            "log": (r.stdout + r.stderr)[-1500:]}


def nnunet_importable(env: dict) -> tuple[bool, str]:
    r = subprocess.run([sys.executable, "-c", "import nnunetv2.inference.predict_from_raw_data"], env=env,
                       capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        return True, ""
    return False, (r.stderr.strip().splitlines() or ["import failed"])[-1]


def table6(cases: list[tuple[str, tuple[int, ...], Callable[[], Path]]], ours_model: Path, nn_model: Path | None, device: str, env: dict,
           work: Path, clock: Clock, reserve_s: float, spec, report: Report, simpleitk: bool) -> dict:
    """Smallest volumes first; a case starts only if twice the estimate (last time x voxel ratio) fits."""
    from .nnunet_runner import model_folds, nnunet_command
    from .harness import run_case
    from .summary import summarise_folder
    from .table6 import combined_table
    from .volumes import TABLE6
    if simpleitk:   # the submission's own CLI
        ours_cmd = [sys.executable, "-m", "inference", "--device", device]
    else:           # same predictor, nibabel I/O (benchmarks.flare.nifti_predict)
        ours_cmd = [sys.executable, "-m", "benchmarks.flare.nifti_predict", "--device", device]
    runs = {"ours": lambda i, o: ours_cmd + ["-i", str(i), "-o", str(o), "-m", str(ours_model),
                                            "--gpu-memory-budget", str(GPU_BUDGET_MIB)]}
    if nn_model is not None:
        folds = model_folds(nn_model)
        runs["nnunet"] = lambda i, o: nnunet_command(i, o, nn_model, folds, False, device)
    last: dict[str, tuple[float, int]] = {}
    done: dict[str, list[str]] = {k: [] for k in runs}
    skipped = []
    for case, size_xyz, make_image in cases:
        voxels = math.prod(size_xyz)
        image = None
        for label, builder in runs.items():
            est = 30.0 if label not in last else last[label][0] * max(1.0, voxels / last[label][1])
            if clock.left() - reserve_s < 2 * est:
                skipped.append(f"{label}/{case} (estimate {est:.0f} s, {clock.left():.0f} s left)")
                continue
            image = image or make_image()   # written only when a run will use it (1024x1024x82: seconds)
            r = run_case(case, image, builder, work / label, spec, 0.1, env, keep_output=False)
            last[label] = (r.time_s, voxels)
            done[label].append(case)
    rows: dict[str, dict[str, dict]] = {}
    result = {"done": done, "skipped": skipped, "ours_command": " ".join(ours_cmd)}
    for label in runs:
        if not done[label]:
            continue
        title = f"Table 6, {label} on {report.env['line']}"
        rr, csv_path, png, md = summarise_folder(work / label, work / f"{label}_summary", title, spec.device,
                                                 interval_s=0.1)
        rows["ours" if label == "ours" else "nnU-Net"] = {r["Name"]: r for r in rr}
        result[f"{label}_table"] = md.read_text()
        report.add_file(csv_path, f"table6_{label}_Efficiency.csv", with_environment=True)
        report.add_file(png, f"table6_{label}_memory.png")
    if rows:
        note = (f"Direct mode (no Docker), NVML every 0.1 s where a GPU is present, the official maths. Ours: "
                f"`{' '.join(ours_cmd[1:])}` with a {GPU_BUDGET_MIB} MiB budget; nnU-Net: its predictor without "
                f"TTA, default resampling. Model: the paper's PlainConvUNet, random weights. {report.env['line']}.")
        paper = [c for rr in rows.values() for c in rr if c in TABLE6]
        result["markdown"] = (combined_table(rows, report.env["gpu"], note) + "\n" if paper else "") + \
            "\n".join(result[f"{label}_table"] for label in runs if done[label])
    bad = [r for rr in rows.values() for r in rr.values() if r.get("Output") not in ("", "ok")]
    result["status"] = "failed" if bad else "ok"
    result["summary"] = (", ".join(f"{k}: {len(v)} case(s)" for k, v in done.items())
                         + (f"; {len(skipped)} run(s) cut for time" if skipped else "")
                         + (f"; {len(bad)} output(s) missing/wrong" if bad else ""))
    return result


def sampler_period(device: str, seconds: float) -> dict:
    try:
        module = importlib.import_module("benchmarks.flare.sampler_period")
    except ImportError:
        return {"status": "skipped", "summary": "benchmarks.flare.sampler_period is not in this checkout"}
    rows = module.measure_together(seconds=seconds, memory="gpu" if device == "cuda" else "cpu")
    return {"status": "ok", "rows": rows, "summary": "; ".join(
        f"{r['mode']}: mean period {r['period_mean_s']:.4f} s over {r['samples']} samples" for r in rows)}


# --- orchestration -------------------------------------------------------------------------------------

class Watchdog:
    """At the hard deadline, end the child processes this check started (by pid), so it ends in time."""

    def __init__(self, deadline_s: float):
        self.fired = False
        self._timer = threading.Timer(deadline_s, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        import psutil
        self.fired = True
        for child in psutil.Process().children(recursive=True):
            try:
                child.terminate()
            except psutil.Error:
                pass

    def cancel(self) -> None:
        self._timer.cancel()


def _log(message: str) -> None:
    print(message, flush=True)


def run_check(out: Path, wheels: Path | None, budget_s: float, device_wanted: str = "cuda", log=_log) -> int:
    """Every step of the check on `device_wanted` ("cuda"; "cpu": the rehearsal, at small sizes, with the GPU
    machine's nibabel I/O); returns the exit code."""
    dry_run = device_wanted == "cpu"   # the rehearsal: small sizes, tiny model
    clock = Clock(budget_s)
    watchdog = Watchdog(budget_s + HARD_MARGIN_S)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    site = None
    failed = False
    try:
        importlib.import_module("torch")   # the machine's CUDA torch: fails early and clearly if absent
        t = time.time()
        installed, why = [], ""
        if wheels is not None:
            site = work / "site"
            installed = install_wheels(wheels, site)
        # The rehearsal's child processes (CUDA tests, profile, Table 6) run as on the GPU machine: no SimpleITK.
        env_vars = child_env(site, hidden=without_simpleitk(work / "hidden") if dry_run else None)
        environment_info = environment(dry_run)
        report = Report(out, environment_info, budget_s)
        log(f"gpu_check: {environment_info['line']}; budget {budget_s:.0f} s -> {out}")
        device = environment_info["device"]
        if device == "cpu" and not dry_run:
            report.step("setup", {"status": "failed", "summary": "no CUDA device (rehearse with --device cpu)"})
            return 2
        simpleitk = importable("SimpleITK") and not dry_run   # the rehearsal: hidden from the children
        nn_ok, why = (False, "CPU rehearsal") if dry_run else nnunet_importable(env_vars)
        report.step("setup", {"status": "ok", "seconds": time.time() - t, "wheels": installed,
                              "simpleitk": simpleitk, "nnunet_predictor": nn_ok or why,
                              "summary": f"{len(installed)} wheel(s) installed; SimpleITK "
                                         f"{'present' if simpleitk else 'absent (nibabel I/O)' if not dry_run else 'hidden from the children as on the GPU machine (nibabel I/O)'}; nnU-Net's "
                                         f"predictor {'importable' if nn_ok else 'not importable: ' + why}"})

        t = time.time()
        res = run_cuda_tests(work, env_vars, timeout=min(150, max(10, clock.left() * 0.3)), simpleitk=simpleitk)
        report.step("cuda_tests", {**res, "seconds": time.time() - t})
        failed |= res["status"] != "ok"
        log(f"cuda tests: {res['summary']}")

        from testsupport.model_folder import write_preset
        from .nifti_io import read_volume
        inputs = work / "inputs"
        inputs.mkdir()
        arch_model = write_preset(work / "model_arch", "tiny" if dry_run else "paper", resampling="torch")
        t = time.time()
        sample = REPO / "samples" / "inputs" / "phantom_0001_0000.nii.gz"
        default_data, default_spacing, _ = read_volume(sample)
        if dry_run:   # every third voxel at the same spacing (a smaller body): a few tiles, seconds on a CPU
            default_data = default_data[:, ::3, ::3, ::3].copy()
        # Spacings near the models' (1.5 / 0.78 mm in-plane): few tiles (8 of the paper model), not hundreds.
        dry_spacing = (1.5, 1.5, 3.0) if dry_run else None
        arch_img = write_volume(work / "agree", "arch", (48, 44, 14) if dry_run else (160, 160, 48), seed=7,
                                spacing_xyz=dry_spacing or (1.25, 1.25, 3.0))
        arch_data, arch_spacing, _ = read_volume(arch_img)
        res = in_child(agreement, [("default model (weights/)", REPO / "weights", default_data, default_spacing),
                                   ("paper architecture, random weights" if not dry_run else
                                    "tiny preset, random weights", arch_model, arch_data, arch_spacing)], device,
                       timeout=max(10, clock.left() * 0.4))
        report.step("agreement", {**res, "seconds": time.time() - t})
        failed |= res["status"] != "ok"
        log(f"agreement: {res['summary']}")

        from .volumes import TABLE6
        sizes = {"dry_small": (40, 36, 12), "dry_large": (56, 48, 16)} if dry_run else \
            {c: TABLE6[c][0] for c in TABLE6}
        seeds = {c: i for i, c in enumerate(sizes)}
        order = sorted(sizes, key=lambda c: math.prod(sizes[c]))
        t = time.time()
        large = order[-1]
        large_img = write_volume(inputs, large, sizes[large], seed=seeds[large], spacing_xyz=dry_spacing)
        res = run_profile(large_img, arch_model, device, env_vars, work, timeout=max(10, clock.left() * 0.3),
                          nibabel=not simpleitk)
        report.step("profile", {**res, "seconds": time.time() - t})
        failed |= res["status"] != "ok"
        log(f"profile: {res['summary']}")

        t = time.time()
        from .nnunet_runner import with_default_resampling
        from .sampler import resolve_source
        spec = resolve_source("gpu" if device == "cuda" else "cpu", 0)
        cases = [(c, sizes[c], lambda c=c: write_volume(inputs, c, sizes[c], seed=seeds[c], spacing_xyz=dry_spacing))
                 for c in order]
        nn_model = with_default_resampling(arch_model, work / "model_arch_nnunet") if nn_ok and not dry_run else None
        res = table6(cases, arch_model, nn_model, device, env_vars, work / "table6", clock, reserve_s=15,
                     spec=spec, report=report, simpleitk=simpleitk)
        if nn_model is None:
            res["nnunet"] = "CPU rehearsal: ours only" if dry_run else f"not run: its import chain is missing ({why})"
        report.step("table6", {**res, "seconds": time.time() - t})
        failed |= res["status"] != "ok"
        log(f"table6: {res['summary']}")

        t = time.time()
        if clock.left() > 12:
            res = sampler_period(device, seconds=2.0 if dry_run else min(10.0, clock.left() - 5))
        else:
            res = {"status": "skipped", "summary": "no time left"}
        report.step("sampler_period", {**res, "seconds": time.time() - t})
        if watchdog.fired:
            report.step("deadline", {"status": "failed", "summary": "hard deadline reached: children ended"})
            failed = True
        log(f"done in {time.time() - clock.start:.0f} s: {out / 'gpu_check.md'}")
        return 1 if failed else 0
    finally:
        watchdog.cancel()
        shutil.rmtree(work, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flare.gpu_check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("-o", "--output", type=Path, help="folder for the (at most 8) result files (--out works too)")
    p.add_argument("--wheels", type=Path, help="folder of wheels made with --prepare-wheels (installed first)")
    p.add_argument("--budget-s", type=float, default=420.0, help="seconds for all steps (default 420; the run "
                   f"ends by budget + {HARD_MARGIN_S} s at the latest)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="cuda: the check; cpu: its rehearsal, every step on the CPU at small sizes with a tiny "
                        "model and the GPU machine's nibabel I/O, CUDA-only tests reported as skipped (CI); auto "
                        "(default): cuda where torch sees a GPU, else the rehearsal")
    p.add_argument("--dry-run", dest="device", action="store_const", const="cpu", help="the same as --device cpu")
    p.add_argument("--prepare-wheels", type=Path, metavar="DIR", help="download the wheels into DIR and exit")
    p.add_argument("--with-nnunet", action="store_true",
                   help="--prepare-wheels: also nnU-Net's predictor chain (SimpleITK; refused over 64 MiB)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.prepare_wheels:
        return prepare_wheels(a.prepare_wheels, a.with_nnunet)
    if a.output is None:
        p.error("-o/--output is required (or --prepare-wheels DIR)")
    if a.budget_s <= 0:
        p.error("--budget-s must be positive")
    try:
        device = a.device
        if device == "auto":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return run_check(a.output, a.wheels, a.budget_s, device)
    except (FileNotFoundError, subprocess.CalledProcessError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
