"""Ours vs nnU-Net's own predictor on the same case and weights, on CPU.

    python -m benchmarks.compare_nnunet [-m MODEL_DIR] [--no-tta-run] [-o benchmarks/results]

Runs, each as a fresh process (as FLARE runs a container: imports and model load count):
  ours              python -m inference -i IN -o OUT -m MODEL --device cpu --timings T.json
  ours, torch fp32  the same with --backend torch --precision fp32 --batch-size 1 (the pre-OpenVINO
                    network stage; its Dice against ours is the default path's accuracy cost;
                    --no-torch-run skips it)
  nnU-Net           nnUNetv2_predict_from_modelfolder -i IN -o OUT -m MODEL' -f FOLDS -device cpu
                    --disable_tta  (its defaults otherwise: 3 preprocessing and 3 export workers)
  nnU-Net + TTA     the same without --disable_tta (mirroring over the checkpoint's axes)
  nnU-Net, model plans   nnU-Net without TTA on MODEL's own plans (e.g. torch resampling, as ours):
                    separates pipeline differences from the resampling choice (--no-same-plans-run
                    skips it)
MODEL' is MODEL with nnU-Net's default plans resampling (skimage based, `resample_data_or_seg_to_shape`;
the same weights, symlinked): nnU-Net as teams get it. Ours reads MODEL's plans as they are.
With random weights the 14 logits are close to each other everywhere, so tiny numerical differences
flip the argmax: Dice agreement is then a lower bound of what a trained model shows.

Per run: wall time from process start to the output file written (its mtime) and to process exit,
peak resident memory of the process tree (sampled every 0.05 s), and, against ours, per-label Dice
agreement. For ours also the start-up (imports + model load) and per-stage seconds from --timings.
Checks the targets of issue #2 (on a 2-core CPU): ours <= 1/3 of nnU-Net's time without TTA;
start-up <= 3 s; read + preprocess + export + write <= 1.5 s.

Case: a T1 phantom (phantoms.generate_case, subject seed 910000, used by no training or held-out set)
on a 320x290x72 grid at 1.25x1.25x3.47 mm (Table 6's amos_0507 grid); with a trained model the report
adds each run's mean Dice against the phantom's true labels. nnU-Net finds the trainer class a
checkpoint names (e.g. the default model's nnUNetTrainerCPUShort) through nnUNet_extTrainer, set to
the repository's training/ unless already set.
Model: -m MODEL_DIR; default the repository's weights/ when it holds a model, else a random-weight
`small_coarse` model folder (testsupport.model_folder) built on the fly. Prints a markdown table and saves it
(and the raw numbers as JSON) under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from inference.atomic import atomic_output, write_json
from testsupport.model_folder import RESAMPLING, write_preset

from .sampler import Sampler, SourceSpec, cpu_description

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CASE = "amos_0507"
CASE_SIZE = (320, 290, 72)
CASE_SPACING = (1.25, 1.25, 3.47)
CASE_SEED = 910000
TARGET_RATIO = 1 / 3
TARGET_STARTUP_S = 3.0
TARGET_RATIO_16 = 0.2           # issue #16: ours / nnU-Net end to end, no TTA
TARGET_NETWORK_SPEEDUP = 2.5    # issue #16: network stage vs torch fp32 batch 1
TARGET_AROUND_S = 1.5
AROUND_STAGES = ("read", "preprocess", "export", "write")


@dataclass
class RunStats:
    label: str
    command: list[str]
    returncode: int
    to_exit_s: float
    to_file_s: float | None      # None: no output file
    peak_rss_mib: float
    log: str
    timings: dict = field(default_factory=dict)   # ours: {"startup": {...}, "seconds": {...}}


def default_model_dir() -> Path | None:
    """The repository's weights/ if it holds an nnU-Net model folder, else None."""
    w = REPO / "weights"
    return w if (w / "plans.json").is_file() and (w / "dataset.json").is_file() else None


def model_folds(model_dir: Path, checkpoint: str = "checkpoint_final.pth") -> list[str]:
    """Fold names (all, 0, 1, ...) that have `checkpoint` in `model_dir`."""
    folds = sorted(p.name[len("fold_"):] for p in model_dir.glob("fold_*") if (p / checkpoint).is_file())
    if not folds:
        raise FileNotFoundError(f"{model_dir}: no fold_*/{checkpoint}")
    return folds


def with_default_resampling(model_dir: Path, out_dir: Path) -> Path:
    """A view of `model_dir` whose plans name nnU-Net's default (skimage) resampling; folds are symlinked."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    plans = json.loads((model_dir / "plans.json").read_text())
    for cfg in plans["configurations"].values():
        if "resampling_fn_data" in cfg or "inherits_from" not in cfg:
            cfg.update(json.loads(json.dumps(RESAMPLING["default"])))
    write_json(out_dir / "plans.json", plans)
    shutil.copy2(model_dir / "dataset.json", out_dir / "dataset.json")
    for fold in model_dir.glob("fold_*"):
        if fold.is_dir():
            (out_dir / fold.name).symlink_to(fold.resolve(), target_is_directory=True)
    return out_dir


NNUNET_ENTRY = "nnunetv2.inference.predict_from_raw_data:predict_entry_point_modelfolder"


def nnunet_command(inputs: Path, outputs: Path, model: Path, folds: Sequence[str], tta: bool,
                   device: str = "cpu", head: Sequence[str] | None = None) -> list[str]:
    """nnU-Net's own CLI for a trained-model folder (`head` replaces the executable, e.g. a capped runner)."""
    if head is None:
        exe = Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"
        mod, func = NNUNET_ENTRY.split(":")
        head = [str(exe)] if exe.is_file() else [sys.executable, "-c", f"from {mod} import {func} as m; m()"]
    cmd = list(head) + ["-i", str(inputs), "-o", str(outputs), "-m", str(model), "-f", *folds,
                        "-device", device, "--disable_progress_bar"]
    return cmd if tta else cmd + ["--disable_tta"]


def ours_command(inputs: Path, outputs: Path, model: Path, timings: Path, tta: bool = False,
                 extra: Sequence[str] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "inference", "-i", str(inputs), "-o", str(outputs), "-m", str(model),
           "--device", "cpu", "--timings", str(timings), *extra,
           "--no-roi"]   # nnU-Net's predictor has no localiser: compare the same whole-image work
    return cmd + ["--tta"] if tta else cmd


def timed_run(label: str, argv: list[str], out_file: Path, log_file: Path, env: dict | None = None,
              cwd: Path | None = None) -> RunStats:
    """Run argv; wall time to exit and to `out_file`'s last write, peak RSS of its process tree."""
    if out_file.exists():
        out_file.unlink()
    sampler = Sampler(SourceSpec("rss-tree", device=cpu_description()), interval=0.05).start()
    with open(log_file, "w") as log:
        t0 = time.time()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        sampler.attach(proc.pid)
        rc = proc.wait()
        t_exit = time.time()
    res = sampler.stop()
    to_file = out_file.stat().st_mtime - t0 if out_file.is_file() else None
    return RunStats(label, argv, rc, t_exit - t0, to_file, max(res["memory"], default=0.0), str(log_file))


def write_phantom_case(inputs: Path, truth: Path) -> None:
    """The T1 phantom image as inputs/<CASE>_0000.nii.gz and its labels as truth/<CASE>.nii.gz (kept
    when both exist: the generator is deterministic)."""
    import SimpleITK as sitk
    from phantoms import generate_case
    img_path, lab_path = inputs / f"{CASE}_0000.nii.gz", truth / f"{CASE}.nii.gz"
    if img_path.is_file() and lab_path.is_file():
        return
    img, lab = generate_case(CASE_SEED, "t1", spacing=CASE_SPACING, size=CASE_SIZE, direction="axial")
    for image, path in ((img, img_path), (lab, lab_path)):
        with atomic_output(path) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=True)


def read_labels(path: Path) -> np.ndarray:
    import SimpleITK as sitk
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def dice_per_label(a: np.ndarray, b: np.ndarray, labels: Sequence[int]) -> dict[int, float | None]:
    """Dice between label maps a and b for each label; None where the label is in neither."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    out: dict[int, float | None] = {}
    for lab in labels:
        ma, mb = a == lab, b == lab
        s = int(ma.sum()) + int(mb.sum())
        out[lab] = None if s == 0 else 2.0 * int(np.logical_and(ma, mb).sum()) / s
    return out


def _fmt(x, nd=2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def network_rows(ours: RunStats, exact: RunStats | None, nnunet: RunStats | None,
                 exact_dice: dict[int, float | None] | None) -> list[str]:
    """Issue #16's rows: ours vs nnU-Net <= 0.2, the network stage vs torch fp32 batch 1 >= 2.5x, and the
    default path's labels against torch fp32's (every label >= 0.97, mean >= 0.99); start-up and peak
    memory must not grow."""
    rows = []
    yes = lambda ok: "yes" if ok else "no"  # noqa: E731
    if nnunet and nnunet.to_file_s and ours.to_file_s:
        ratio = ours.to_file_s / nnunet.to_file_s
        rows.append(f"| ours / nnU-Net time (issue #16) | {ratio:.2f} | <= {TARGET_RATIO_16:.2f} | "
                    f"{yes(ratio <= TARGET_RATIO_16)} |")
    if not exact or not exact.timings:
        return rows
    net, net_exact = ours.timings.get("seconds", {}).get("network"), exact.timings.get("seconds", {}).get("network")
    if net and net_exact:
        speedup = net_exact / net
        rows.append(f"| network stage vs torch fp32 batch 1 ({ours.timings.get('network')}) | {speedup:.2f}x | "
                    f">= {TARGET_NETWORK_SPEEDUP:.1f}x | {yes(speedup >= TARGET_NETWORK_SPEEDUP)} |")
    start, start_exact = (sum(r.timings.get("startup", {}).values()) for r in (ours, exact))
    rows.append(f"| start-up vs torch fp32 (s) | {start:.2f} vs {start_exact:.2f} | not more | "
                f"{yes(start <= start_exact * 1.05)} |")
    rows.append(f"| peak RSS vs torch fp32 (MB) | {ours.peak_rss_mib:,.0f} vs {exact.peak_rss_mib:,.0f} | not more | "
                f"{yes(ours.peak_rss_mib <= exact.peak_rss_mib * 1.05)} |")
    values = [v for v in (exact_dice or {}).values() if v is not None]
    if values:
        rows.append(f"| Dice ours vs torch fp32: lowest label / mean | {min(values):.4f} / {np.mean(values):.4f} | "
                    f">= 0.97 / 0.99 | {yes(min(values) >= 0.97 and np.mean(values) >= 0.99)} |")
    return rows


def report(runs: list[RunStats], dice: dict[str, dict[int, float | None]], label_names: dict[int, str],
           device: str, model_desc: str, threads: int, load: str = "",
           counts: dict[int, int] | None = None, truth_dice: dict[str, float] | None = None) -> str:
    """The markdown report: runs table, ours' stage breakdown and targets, Dice agreement table."""
    by = {r.label: r for r in runs}
    lines = [(f"### Ours vs nnU-Net's predictor ({CASE_SIZE[0]}x{CASE_SIZE[1]}x{CASE_SIZE[2]} at "
             f"{'x'.join(str(s) for s in CASE_SPACING)} mm, CPU)"), "",
             f"Device: {device}; torch threads {threads}. Model: {model_desc}." +
             (f" Load average (1 min) before/after: {load}." if load else ""), "",
             "| Run | Wall to file written (s) | Wall to exit (s) | Peak RSS, process tree (MB) | rc | "
             "mean Dice vs truth |",
             "|---|---:|---:|---:|---:|---:|"]
    truth_dice = truth_dice or {}
    for r in runs:
        lines.append(f"| {r.label} | {_fmt(r.to_file_s)} | {_fmt(r.to_exit_s)} | {r.peak_rss_mib:,.0f} | "
                     f"{r.returncode} | {_fmt(truth_dice.get(r.label), 4)} |")
    ours = by.get("ours")
    if ours and ours.timings:
        st, sec = ours.timings.get("startup", {}), ours.timings.get("seconds", {})
        startup = sum(st.values()) if st else None
        around = sum(sec.get(k, 0.0) for k in AROUND_STAGES) if sec else None
        lines += ["", "Ours, per stage (s): " + ", ".join(f"{k} {v:.2f}" for k, v in {**st, **sec}.items()), "",
                  "| Target (issue #2, 2-core CPU) | Measured | Target | Met |", "|---|---:|---:|---|"]
        ref = by.get("nnU-Net")
        if ref and ref.to_file_s and ours.to_file_s:
            ratio = ours.to_file_s / ref.to_file_s
            lines.append(f"| ours / nnU-Net time (no TTA) | {ratio:.2f} | <= {TARGET_RATIO:.2f} | "
                         f"{'yes' if ratio <= TARGET_RATIO else 'no'} |")
        if startup is not None:
            lines.append(f"| start-up: imports + model load (s) | {startup:.2f} | <= {TARGET_STARTUP_S:.1f} | "
                         f"{'yes' if startup <= TARGET_STARTUP_S else 'no'} |")
        if around is not None:
            lines.append(f"| read + preprocess + export + write (s) | {around:.2f} | <= {TARGET_AROUND_S:.1f} | "
                         f"{'yes' if around <= TARGET_AROUND_S else 'no'} |")
        lines += network_rows(ours, by.get("ours, torch fp32"), ref, dice.get("ours, torch fp32"))
    if dice:
        cols = list(dice)
        counts = counts or {}
        lines += ["", "Dice agreement with ours, per label (- : label in neither):", "",
                  "| Label | voxels (ours) | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
        for lab in sorted(label_names):
            if lab == 0:
                continue
            lines.append(f"| {lab} {label_names[lab]} | {counts.get(lab, '-'):,} | " if lab in counts else
                         f"| {lab} {label_names[lab]} | - | ")
            lines[-1] += " | ".join(_fmt(dice[c].get(lab), 4) for c in cols) + " |"
        means = {}
        for c in cols:
            vals = [v for k, v in dice[c].items() if v is not None and k != "mean"]
            means[c] = float(np.mean(vals)) if vals else None
        lines.append("| **mean** | | " + " | ".join(_fmt(means[c], 4) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def device_slug(device: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")[:60]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare_nnunet", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("-m", "--model", type=Path, help="nnU-Net model folder (default: weights/ or a small "
                                                    "random-weight model)")
    p.add_argument("--no-tta-run", action="store_true", help="skip the (slow) nnU-Net run with TTA")
    p.add_argument("--no-same-plans-run", action="store_true",
                   help="skip nnU-Net on the model's own plans (e.g. torch resampling)")
    p.add_argument("--ours-tta", action="store_true", help="also run ours with --tta")
    p.add_argument("--no-torch-run", action="store_true",
                   help="skip ours with --backend torch --precision fp32 --batch-size 1")
    p.add_argument("--work", type=Path, default=RESULTS / "tmp" / "compare_nnunet",
                   help="scratch folder (case, model, outputs, logs)")
    p.add_argument("-o", "--output", dest="out_dir", type=Path, default=RESULTS,
                   help="folder for compare_nnunet_<device>.md/.json (default benchmarks/results)")
    p.add_argument("--report-only", action="store_true",
                   help="no runs: rebuild the table from the saved JSON and the outputs in --work")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    device = cpu_description()
    stem = a.out_dir / f"compare_nnunet_{device_slug(device)}"
    if a.report_only:
        saved = json.loads(Path(f"{stem}.json").read_text())
        runs = [RunStats(**r) for r in saved["runs"]]
        return _finish(a, runs, Path(saved["model_dir"]), saved["model"], saved["torch_threads"],
                       saved.get("load_average_1min", ""), device, stem)

    import torch  # only for the thread count in the report
    threads = torch.get_num_threads()
    work = a.work
    (work / "logs").mkdir(parents=True, exist_ok=True)
    inputs = work / "inputs"
    write_phantom_case(inputs, work / "truth")
    model = a.model or default_model_dir()
    if model is None:
        model = work / "model_small_coarse"
        write_preset(model, "small_coarse", resampling="torch")  # rewritten: cheap, and never stale
        model_desc = ("random-weight `small_coarse` PlainConvUNet (testsupport.model_folder: features 4-40, "
                      "patch 40x192x224, spacing 3.0x1.5x1.5 mm), torch resampling in plans")
    else:
        model_desc = str(model)
    model = model.resolve()
    folds = model_folds(model)
    nn_model = with_default_resampling(model, work / "model_nnunet_default_resampling")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in
                                                                      os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # silences nnU-Net's warnings
        env.setdefault(k, str(work / k))
    env.setdefault("nnUNet_extTrainer", str(REPO / "training"))
    runs: list[RunStats] = []
    load_before = os.getloadavg()[0]
    plan = [("ours", False, "ours", ())]
    if not a.no_torch_run:
        plan.append(("ours, torch fp32", False, "ours_torch_fp32",
                     ("--backend", "torch", "--precision", "fp32", "--batch-size", "1")))
    if a.ours_tta:
        plan.append(("ours + TTA", True, "ours_tta", ()))
    for label, tta, tag, extra in plan:
        out = work / f"out_{tag}"
        out.mkdir(exist_ok=True)
        tfile = work / f"timings_{out.name}.json"
        print(f"running {label} ...", flush=True)
        r = timed_run(label, ours_command(inputs, out, model, tfile, tta, extra), out / f"{CASE}.nii.gz",
                      work / "logs" / f"{out.name}.log", env, REPO)
        if tfile.is_file():
            t = json.loads(tfile.read_text())
            r.timings = {"startup": t.get("startup", {}), "network": t.get("network"),
                         "seconds": (t.get("cases") or [{}])[0].get("seconds", {})}
        runs.append(r)
    nn_plan = [("nnU-Net", nn_model, False, "nnunet")]
    if not a.no_tta_run:
        nn_plan.append(("nnU-Net + TTA", nn_model, True, "nnunet_tta"))
    if not a.no_same_plans_run:
        nn_plan.append(("nnU-Net, model plans", model, False, "nnunet_model_plans"))
    for label, mdir, tta, tag in nn_plan:
        out = work / f"out_{tag}"
        out.mkdir(exist_ok=True)
        print(f"running {label} ...", flush=True)
        runs.append(timed_run(label, nnunet_command(inputs, out, mdir, folds, tta), out / f"{CASE}.nii.gz",
                              work / "logs" / f"{out.name}.log", env, REPO))
    for r in runs:
        print(f"  {r.label}: rc {r.returncode}, {_fmt(r.to_file_s)} s to file, {_fmt(r.to_exit_s)} s to exit, "
              f"peak RSS {r.peak_rss_mib:,.0f} MB (log {r.log})")

    load = f"{load_before:.1f} / {os.getloadavg()[0]:.1f}"
    return _finish(a, runs, model, model_desc, threads, load, device, stem)


def _finish(a, runs: list[RunStats], model: Path, model_desc: str, threads: int, load: str, device: str,
            stem: Path) -> int:
    """Dice agreement from the outputs in a.work, the report, and the saved .md/.json."""
    ds = json.loads((model / "dataset.json").read_text())
    label_names = {int(v): k for k, v in ds["labels"].items() if isinstance(v, int)}
    dice: dict[str, dict] = {}
    counts: dict[int, int] = {}
    organs = sorted(lab for lab in label_names if lab)
    truth_dice: dict[str, float] = {}
    truth_file = a.work / "truth" / f"{CASE}.nii.gz"
    if truth_file.is_file():
        truth = read_labels(truth_file)
        for r in runs:
            f = Path(r.command[r.command.index("-o") + 1]) / f"{CASE}.nii.gz"
            if f.is_file():
                per_label = [v for v in dice_per_label(truth, read_labels(f), organs).values() if v is not None]
                truth_dice[r.label] = float(np.mean(per_label)) if per_label else 0.0
    ours_out = a.work / "out_ours" / f"{CASE}.nii.gz"
    if ours_out.is_file():
        ref = read_labels(ours_out)
        counts = {lab: int((ref == lab).sum()) for lab in label_names if lab}
        for r in runs:
            f = Path(r.command[r.command.index("-o") + 1]) / f"{CASE}.nii.gz"
            if r.label != "ours" and f.is_file():
                dice[r.label] = dice_per_label(ref, read_labels(f), sorted(l for l in label_names if l))
    text = report(runs, dice, label_names, device, model_desc, threads, load, counts, truth_dice)
    print()
    print(text)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"device": device, "torch_threads": threads, "load_average_1min": load, "model": model_desc,
               "model_dir": str(model), "runs": [asdict(r) for r in runs], "label_voxels_ours": counts,
               "dice": {k: {str(lab): v for lab, v in d.items()} for k, d in dice.items()},
               "mean_dice_vs_truth": truth_dice}
    for path, content in ((Path(f"{stem}.md"), text), (Path(f"{stem}.json"), json.dumps(payload, indent=2))):
        with atomic_output(path, mode=0o644) as tmp:
            tmp.write_text(content)
    print(f"wrote {stem}.md and {stem}.json")
    return 0 if all(r.returncode == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
