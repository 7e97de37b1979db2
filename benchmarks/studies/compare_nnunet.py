"""Ours vs nnU-Net's own predictor on the same case and weights, on CPU, in one interleaved run.

    python -m benchmarks.studies.compare_nnunet [-m MODEL_DIR] [--rounds N] [--nnunet-rounds M] [--no-tta-run]
                                        [--no-same-plans-run] [--no-torch-run] [-o benchmarks/results]

Configurations, each run as a fresh process (as FLARE runs a container: imports and model load count):
  ours, default settings  python -m inference -i IN -o OUT -m MODEL --device cpu --timings T.json: the
                    shipped default (ROI-first with the model's localiser, when it has one)
  ours, whole image the same with --no-roi: nnU-Net's predictor has no localiser, so this run does the
                    same whole-image work as nnU-Net (the like-for-like comparison)
  ours, torch fp32  ours, whole image with --backend torch --precision fp32 --batch-size 1 (the
                    pre-OpenVINO network stage; its Dice against ours, whole image is the default
                    path's accuracy cost; --no-torch-run skips it)
  nnU-Net           nnUNetv2_predict_from_modelfolder -i IN -o OUT -m MODEL' -f FOLDS -device cpu
                    --disable_tta  (its defaults otherwise: 3 preprocessing and 3 export workers)
  nnU-Net + TTA     the same without --disable_tta (mirroring over the checkpoint's axes; --no-tta-run
                    skips it)
  nnU-Net, model plans   nnU-Net without TTA on MODEL's own plans (e.g. torch resampling, as ours):
                    separates pipeline differences from the resampling choice (--no-same-plans-run
                    skips it)
MODEL' is MODEL with nnU-Net's default plans resampling (skimage based, `resample_data_or_seg_to_shape`;
the same weights, symlinked): nnU-Net as teams get it. Ours reads MODEL's plans as they are.
With random weights the 14 logits are close to each other everywhere, so tiny numerical differences
flip the argmax: Dice agreement is then a lower bound of what a trained model shows.

Interleaving (issue #16: the targets are measured "in one interleaved run"): every configuration runs
once per round, --rounds rounds (default 3); round r starts with configuration r mod n and goes on in
the same cyclic order, so over n rounds each configuration goes first once and a load spike or a cold
file cache falls on all configurations alike. The nnU-Net configurations, the slowest, run in the first
--nnunet-rounds rounds only (default: all; fewer rounds save time, but their medians then
come from fewer runs at other moments than ours'). The 1-minute load average is printed before each run and
kept per run in the JSON; the report states its range.

Per run: wall time from process start to the output file written (its mtime) and to process exit,
peak resident memory of the process tree (sampled every 0.05 s), and, for ours, the start-up and the
per-stage seconds from --timings. Per configuration the report gives the median over the rounds with
the min-max beside it; every target below is computed from medians. Per-label Dice agreement with
ours, whole image comes from the last round's outputs (the runs are deterministic).
Start-up is reported two ways, both against torch fp32 (issue #16: "must not grow"): start-up =
imports + model load; time to first tile = imports + model load + read + localize + preprocess,
everything before the network stage (a lazy import moves cost from start-up into a later stage, and
this sum still counts it).
Targets: issue #2 (on a 2-core CPU, ours, whole image): ours <= 1/3 of nnU-Net's time without TTA;
start-up <= 3 s; read + preprocess + export + write <= 1.5 s. Issue #16: ours / nnU-Net <= 0.2, for
both ours runs; the network stage >= 2.5x faster than torch fp32 batch 1 on the same tiles; start-up,
time to first tile and peak RSS not above torch fp32's (5 % tolerance); labels vs torch fp32: every
label's Dice >= 0.97, mean >= 0.99.

Case: a T1 phantom (phantoms.generate_case, subject seed 910000, used by no training or held-out set)
on a 320x290x72 grid at 1.25x1.25x3.47 mm (Table 6's amos_0507 grid); with a trained model the report
adds each configuration's mean Dice against the phantom's true labels. nnU-Net finds the trainer class
a checkpoint names (e.g. the default model's nnUNetTrainerCPUShort) through nnUNet_extTrainer, set to
the repository's training/ unless already set.
Model: -m MODEL_DIR; default the repository's weights/ when it holds a model, else a random-weight
`small_coarse` model folder (testsupport.model_folder) built on the fly. Prints a markdown table and
saves it (and every run's raw numbers as JSON) as -o/compare_nnunet_<cpu>.md/.json. Run it under the
measurement lock: `flock /tmp/flare-measure.lock python -m benchmarks.studies.compare_nnunet ...`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from testsupport.model_folder import write_preset

from benchmarks.common import (REPO, SCRATCH, atomic_output, command_line, cpu_description, dice_per_label, load_average,
                               metadata_markdown, results_dir, run_metadata, write_json, write_text)
from benchmarks.flare.nnunet_runner import model_folds, nnunet_command, with_default_resampling
from benchmarks.flare.sampler import Sampler, SourceSpec

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
BEFORE_NETWORK = ("read", "localize", "preprocess")   # + start-up: the time to the first tile
SAME_TOLERANCE = 1.05   # "must not grow": within 5 % (run-to-run noise on a shared machine)

OURS_DEFAULT = "ours, default settings"
OURS = "ours, whole image"            # the reference of the Dice tables and of issue #2's targets
OURS_TORCH = "ours, torch fp32"
NNUNET = "nnU-Net"
LEGACY_LABELS = {"ours": OURS}        # results files written before the default-settings run existed


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
    round: int = 0                   # 0-based round of the interleaved run
    load_1min: float | None = None   # 1-minute load average just before the run started


def default_model_dir() -> Path | None:
    """The repository's weights/ if it holds an nnU-Net model folder, else None."""
    w = REPO / "weights"
    return w if (w / "plans.json").is_file() and (w / "dataset.json").is_file() else None


def ours_command(inputs: Path, outputs: Path, model: Path, timings: Path, tta: bool = False,
                 extra: Sequence[str] = (), roi: bool = False) -> list[str]:
    """Our predictor's CLI; `roi=False` adds --no-roi (nnU-Net's predictor has no localiser: the same
    whole-image work), `roi=True` is the shipped default (ROI-first when the model has a localiser)."""
    cmd = [sys.executable, "-m", "inference", "-i", str(inputs), "-o", str(outputs), "-m", str(model),
           "--device", "cpu", "--timings", str(timings), *extra]
    if not roi:
        cmd.append("--no-roi")
    return cmd + ["--tta"] if tta else cmd


def schedule(runs_per_config: Sequence[int], rounds: int) -> list[list[int]]:
    """Configuration indices to run, per round: round r starts with configuration r mod n and goes on
    cyclically (over n rounds each configuration goes first once); configuration i takes part in its
    first runs_per_config[i] rounds only."""
    n = len(runs_per_config)
    return [[i for i in ((r + k) % n for k in range(n)) if r < runs_per_config[i]] for r in range(rounds)]


def timed_run(label: str, argv: list[str], out_file: Path, log_file: Path, env: dict | None = None,
              cwd: Path | None = None, round_index: int = 0) -> RunStats:
    """Run argv; wall time to exit and to `out_file`'s last write, peak RSS of its process tree, and the
    1-minute load average just before (printed)."""
    if out_file.exists():
        out_file.unlink()
    load = load_average()[0]
    print(f"round {round_index + 1}: running {label} (load average, 1 min: {load:.2f}) ...", flush=True)
    sampler = Sampler(SourceSpec("rss-tree", device=cpu_description()), interval=0.05).start()
    with open(log_file, "w") as log:
        t0 = time.time()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        sampler.attach(proc.pid)
        rc = proc.wait()
        t_exit = time.time()
    res = sampler.stop()
    to_file = out_file.stat().st_mtime - t0 if out_file.is_file() else None
    return RunStats(label, argv, rc, t_exit - t0, to_file, max(res["memory"], default=0.0), str(log_file),
                    round=round_index, load_1min=round(load, 2))


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


def _fmt(x, nd=2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


Metric = Callable[[RunStats], "float | None"]


def startup_s(r: RunStats) -> float | None:
    """Imports + model load, from ours' --timings."""
    st = r.timings.get("startup") if r.timings else None
    return sum(st.values()) if st else None


def first_tile_s(r: RunStats) -> float | None:
    """Everything before the network stage: start-up + read + localize + preprocess."""
    start, sec = startup_s(r), (r.timings or {}).get("seconds")
    return None if start is None or not sec else start + sum(sec.get(k, 0.0) for k in BEFORE_NETWORK)


def stage_s(name: str) -> Metric:
    return lambda r: (r.timings or {}).get("seconds", {}).get(name)


def around_s(r: RunStats) -> float | None:
    sec = (r.timings or {}).get("seconds")
    return sum(sec.get(k, 0.0) for k in AROUND_STAGES) if sec else None


TO_FILE: Metric = lambda r: r.to_file_s            # noqa: E731
TO_EXIT: Metric = lambda r: r.to_exit_s            # noqa: E731
PEAK_RSS: Metric = lambda r: r.peak_rss_mib        # noqa: E731


@dataclass
class Summary:
    """One configuration's runs over the rounds: medians and min-max of any per-run metric."""
    label: str
    runs: list[RunStats]

    def values(self, metric: Metric) -> list[float]:
        return [v for v in map(metric, self.runs) if v is not None]

    def median(self, metric: Metric) -> float | None:
        v = self.values(metric)
        return float(statistics.median(v)) if v else None

    def span(self, metric: Metric) -> tuple[float, float] | None:
        v = self.values(metric)
        return (min(v), max(v)) if v else None

    @property
    def returncode(self) -> int:
        """The first non-zero exit status over the rounds, else 0."""
        return next((r.returncode for r in self.runs if r.returncode != 0), 0)

    @property
    def timings(self) -> dict:
        """Median seconds per start-up part and per stage, in the order the runs name them."""
        out: dict = {}
        for part in ("startup", "seconds"):
            names = list(dict.fromkeys(k for r in self.runs for k in (r.timings or {}).get(part, {})))
            out[part] = {k: self.median(lambda r, k=k, part=part: (r.timings or {}).get(part, {}).get(k))
                         for k in names}
        return {k: v for k, v in out.items() if v}

    def cell(self, metric: Metric, nd: int = 2, fmt: str | None = None) -> str:
        """'median (min-max)' over the rounds, the median alone for one run, '-' for none."""
        f = (lambda x: format(x, fmt)) if fmt else (lambda x: _fmt(x, nd))
        v = self.values(metric)
        if not v:
            return "-"
        text = f(statistics.median(v))
        return text if len(v) == 1 else f"{text} ({f(min(v))}-{f(max(v))})"


def summarise(runs: Sequence[RunStats]) -> dict[str, Summary]:
    """Runs grouped by configuration label, in the order the labels first appear."""
    out: dict[str, Summary] = {}
    for r in runs:
        out.setdefault(LEGACY_LABELS.get(r.label, r.label), Summary(LEGACY_LABELS.get(r.label, r.label), [])).runs.append(r)
    return out


def load_range(runs: Sequence[RunStats]) -> tuple[float, float] | None:
    loads = [r.load_1min for r in runs if r.load_1min is not None]
    return (min(loads), max(loads)) if loads else None


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def not_more_row(what: str, ours: Summary, ref: Summary, metric: Metric, fmt: str = ".2f") -> str | None:
    """'must not grow' row: ours' median against the reference's, within SAME_TOLERANCE."""
    a, b = ours.median(metric), ref.median(metric)
    if a is None or b is None:
        return None
    return (f"| {what}: {ours.label} vs {ref.label} | {a:{fmt}} vs {b:{fmt}} | not more | "
            f"{_yes(a <= b * SAME_TOLERANCE)} |")


def network_rows(by: dict[str, Summary], exact_dice: dict[int, float | None] | None) -> list[str]:
    """Issue #16's rows, from medians: ours / nnU-Net <= 0.2 for both ours runs (whole image is the
    like-for-like one), the network stage vs torch fp32 batch 1 >= 2.5x, start-up, time to first tile and
    peak memory not above torch fp32's, and the labels against torch fp32's (every label >= 0.97, mean
    >= 0.99)."""
    rows = []
    nnunet, exact = by.get(NNUNET), by.get(OURS_TORCH)
    ours_runs = [by[k] for k in (OURS_DEFAULT, OURS) if k in by]
    notes = {OURS_DEFAULT: "the shipped default, ROI-first", OURS: "like-for-like: the same whole-image work"}
    for ours in ours_runs:
        t_ours, t_nn = ours.median(TO_FILE), nnunet.median(TO_FILE) if nnunet else None
        if t_ours and t_nn:
            ratio = t_ours / t_nn
            rows.append(f"| {ours.label} / nnU-Net time (issue #16; {notes[ours.label]}) | {ratio:.2f} | "
                        f"<= {TARGET_RATIO_16:.2f} | {_yes(ratio <= TARGET_RATIO_16)} |")
    if exact is None:
        return rows
    whole = by.get(OURS)
    net, net_exact = (whole.median(stage_s("network")) if whole else None), exact.median(stage_s("network"))
    if net and net_exact:
        speedup = net_exact / net
        backend = whole.runs[0].timings.get("network")
        rows.append(f"| network stage: {OURS} ({backend}) vs torch fp32 batch 1 | {speedup:.2f}x | "
                    f">= {TARGET_NETWORK_SPEEDUP:.1f}x | {_yes(speedup >= TARGET_NETWORK_SPEEDUP)} |")
    for what, metric, fmt in (("start-up (s)", startup_s, ".2f"), ("time to first tile (s)", first_tile_s, ".2f"),
                              ("peak RSS (MB)", PEAK_RSS, ",.0f")):
        rows += [row for ours in ours_runs if (row := not_more_row(what, ours, exact, metric, fmt))]
    values = [v for v in (exact_dice or {}).values() if v is not None]
    if values:
        rows.append(f"| Dice {OURS} vs torch fp32: lowest label / mean | {min(values):.4f} / "
                    f"{np.mean(values):.4f} | >= 0.97 / 0.99 | {_yes(min(values) >= 0.97 and np.mean(values) >= 0.99)} |")
    return rows


def report(runs: list[RunStats], dice: dict[str, dict[int, float | None]], label_names: dict[int, str],
           device: str, model_desc: str, threads: int, load: str = "",
           counts: dict[int, int] | None = None, truth_dice: dict[str, float] | None = None) -> str:
    """The markdown report from every run of every round: per configuration the median and min-max,
    ours' stages, the targets of issues #2 and #16 from medians, the Dice agreement table, every run."""
    by = summarise(runs)
    n_rounds = len({r.round for r in runs})
    loads = load_range(runs)
    lines = [(f"### Ours vs nnU-Net's predictor ({CASE_SIZE[0]}x{CASE_SIZE[1]}x{CASE_SIZE[2]} at "
             f"{'x'.join(str(s) for s in CASE_SPACING)} mm, CPU)"), "",
             f"Device: {device}; torch threads {threads}. Model: {model_desc}." +
             (f" Load average (1 min) before/after: {load}." if load else "") +
             (f" Load average (1 min) before each run: {loads[0]:.2f}-{loads[1]:.2f}." if loads else ""), "",
             f"{n_rounds} interleaved round(s), each configuration a fresh process once per round, in an order "
             "rotating by one each round. Each cell: the median over the rounds, (min-max) where more than one.",
             "",
             "| Run | runs | Wall to file written (s) | Wall to exit (s) | Peak RSS, process tree (MB) | rc | "
             "mean Dice vs truth |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    truth_dice = truth_dice or {}
    for s in by.values():
        lines.append(f"| {s.label} | {len(s.runs)} | {s.cell(TO_FILE)} | {s.cell(TO_EXIT)} | "
                     f"{s.cell(PEAK_RSS, fmt=',.0f')} | {s.returncode} | {_fmt(truth_dice.get(s.label), 4)} |")
    timed = [s for s in by.values() if s.timings]
    if timed:
        names = list(dict.fromkeys(k for s in timed for part in ("startup", "seconds")
                                   for k in s.timings.get(part, {})))
        lines += ["", "Ours, per stage (s, medians; start-up = imports + model load; time to first tile = "
                      "start-up + read + localize + preprocess):", "",
                  "| Run | start-up | time to first tile | " + " | ".join(names) + " |",
                  "|---|" + "---:|" * (2 + len(names))]
        for s in timed:
            parts = {**s.timings.get("startup", {}), **s.timings.get("seconds", {})}
            lines.append(f"| {s.label} | {s.cell(startup_s)} | {s.cell(first_tile_s)} | "
                         + " | ".join(_fmt(parts.get(k)) for k in names) + " |")
    ours = by.get(OURS)
    if ours and ours.timings:
        startup, around = ours.median(startup_s), ours.median(around_s)
        lines += ["", f"| Target (issue #2, 2-core CPU; {OURS}, medians) | Measured | Target | Met |",
                  "|---|---:|---:|---|"]
        ref = by.get(NNUNET)
        t_ours, t_ref = ours.median(TO_FILE), ref.median(TO_FILE) if ref else None
        if t_ours and t_ref:
            ratio = t_ours / t_ref
            lines.append(f"| ours / nnU-Net time (no TTA) | {ratio:.2f} | <= {TARGET_RATIO:.2f} | "
                         f"{_yes(ratio <= TARGET_RATIO)} |")
        if startup is not None:
            lines.append(f"| start-up: imports + model load (s) | {startup:.2f} | <= {TARGET_STARTUP_S:.1f} | "
                         f"{_yes(startup <= TARGET_STARTUP_S)} |")
        if around is not None:
            lines.append(f"| read + preprocess + export + write (s) | {around:.2f} | <= {TARGET_AROUND_S:.1f} | "
                         f"{_yes(around <= TARGET_AROUND_S)} |")
    rows16 = network_rows(by, dice.get(OURS_TORCH))
    if rows16:
        lines += ["", "| Target (issue #16, 2-core CPU, medians) | Measured | Target | Met |", "|---|---:|---:|---|",
                  *rows16, "", f"Like-for-like with nnU-Net: {OURS} (no localiser, the same whole-image work); "
                  f"{OURS_DEFAULT} is what a user gets. Start-up = imports + model load; time to first tile = "
                  "start-up + read + localize + preprocess (all before the network stage)."]
    if dice:
        cols = list(dice)
        counts = counts or {}
        lines += ["", f"Dice agreement with {OURS}, per label (- : label in neither):", "",
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
    if n_rounds > 1 or len(runs) > len(by):
        lines += ["", "Every run, in the order run:", "",
                  "| Round | Run | load (1 min) before | Wall to file written (s) | Wall to exit (s) | Peak RSS (MB) | rc |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for r in sorted(runs, key=lambda r: r.round):   # stable: the order run within a round
            lines.append(f"| {r.round + 1} | {LEGACY_LABELS.get(r.label, r.label)} | {_fmt(r.load_1min)} | "
                         f"{_fmt(r.to_file_s)} | {_fmt(r.to_exit_s)} | {r.peak_rss_mib:,.0f} | {r.returncode} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.compare_nnunet", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("-m", "--model", type=Path, help="nnU-Net model folder (default: weights/ or a small "
                                                    "random-weight model)")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds: every configuration runs once per round, round r starting with "
                        "configuration r mod n; the report gives the median and min-max (default 3)")
    p.add_argument("--nnunet-rounds", type=int, default=None,
                   help="run the nnU-Net configurations (the slowest) in the first N rounds only "
                        "(default: all --rounds)")
    p.add_argument("--no-tta-run", action="store_true", help="skip the (slow) nnU-Net run with TTA")
    p.add_argument("--no-same-plans-run", action="store_true",
                   help="skip nnU-Net on the model's own plans (e.g. torch resampling)")
    p.add_argument("--ours-tta", action="store_true", help="also run ours, whole image with --tta")
    p.add_argument("--no-torch-run", action="store_true",
                   help="skip ours with --backend torch --precision fp32 --batch-size 1")
    p.add_argument("--work", type=Path, default=SCRATCH / "compare_nnunet",
                   help="scratch folder (case, model, outputs, logs)")
    p.add_argument("-o", "--output", dest="out_dir", type=Path, default=None,
                   help="folder for compare_nnunet.md/.json (default benchmarks/results/compare_nnunet/<machine>)")
    p.add_argument("--report-only", action="store_true",
                   help="no runs: rebuild the table from the saved JSON and the outputs in --work")
    return p


@dataclass(frozen=True)
class Configuration:
    """One configuration of the interleaved run: its command, output file, log stem and timings file."""
    label: str
    argv: list[str]
    out_file: Path
    tag: str
    timings_file: Path | None = None   # ours: --timings
    nnunet: bool = False


def configurations(a, inputs: Path, model: Path, nn_model: Path, folds: Sequence[str]) -> list[Configuration]:
    """The configurations to compare, in report order (round 1 runs them in this order)."""
    work = a.work
    ours = [(OURS_DEFAULT, False, "ours_default", (), True), (OURS, False, "ours_whole", (), False)]
    if not a.no_torch_run:
        ours.append((OURS_TORCH, False, "ours_torch_fp32",
                     ("--backend", "torch", "--precision", "fp32", "--batch-size", "1"), False))
    if a.ours_tta:
        ours.append(("ours, whole image + TTA", True, "ours_tta", (), False))
    out: list[Configuration] = []
    for label, tta, tag, extra, roi in ours:
        out_dir, tfile = work / f"out_{tag}", work / f"timings_{tag}.json"
        out.append(Configuration(label, ours_command(inputs, out_dir, model, tfile, tta, extra, roi=roi),
                                 out_dir / f"{CASE}.nii.gz", tag, tfile))
    nn = [(NNUNET, nn_model, False, "nnunet")]
    if not a.no_tta_run:
        nn.append(("nnU-Net + TTA", nn_model, True, "nnunet_tta"))
    if not a.no_same_plans_run:
        nn.append(("nnU-Net, model plans", model, False, "nnunet_model_plans"))
    for label, mdir, tta, tag in nn:
        out_dir = work / f"out_{tag}"
        out.append(Configuration(label, nnunet_command(inputs, out_dir, mdir, folds, tta), out_dir / f"{CASE}.nii.gz",
                                 tag, nnunet=True))
    return out


def run_configuration(c: Configuration, round_index: int, work: Path, env: dict) -> RunStats:
    """One fresh-process run of `c`; ours' --timings are read into the result."""
    c.out_file.parent.mkdir(parents=True, exist_ok=True)
    if c.timings_file is not None and c.timings_file.exists():
        c.timings_file.unlink()   # never read a previous round's timings
    r = timed_run(c.label, c.argv, c.out_file, work / "logs" / f"{c.tag}_round{round_index + 1}.log", env, REPO,
                  round_index)
    if c.timings_file is not None and c.timings_file.is_file():
        t = json.loads(c.timings_file.read_text())
        r.timings = {"startup": t.get("startup", {}), "network": t.get("network"),
                     "seconds": (t.get("cases") or [{}])[0].get("seconds", {})}
    print(f"  {r.label}: rc {r.returncode}, {_fmt(r.to_file_s)} s to file, {_fmt(r.to_exit_s)} s to exit, "
          f"peak RSS {r.peak_rss_mib:,.0f} MB (log {r.log})", flush=True)
    return r


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    nnunet_rounds = a.rounds if a.nnunet_rounds is None else a.nnunet_rounds
    if a.rounds < 1 or not 1 <= nnunet_rounds <= a.rounds:
        p.error(f"need --rounds >= 1 and 1 <= --nnunet-rounds <= --rounds, got {a.rounds} and {nnunet_rounds}")
    device = cpu_description()
    a.out_dir = a.out_dir or results_dir("compare_nnunet")
    stem = a.out_dir / "compare_nnunet"
    if a.report_only:
        saved = json.loads(Path(f"{stem}.json").read_text())
        runs = [RunStats(**r) for r in saved["runs"]]
        return _finish(a, runs, Path(saved["model_dir"]), saved["model"], saved["torch_threads"],
                       saved.get("load_average_1min", ""), device, stem, saved.get("metadata"))

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
    else:   # a folder inside the repository by its relative path (results files name nothing outside it)
        model_desc = str(model.resolve().relative_to(REPO)) if model.resolve().is_relative_to(REPO) else str(model)
    model = model.resolve()
    folds = model_folds(model)
    nn_model = with_default_resampling(model, work / "model_nnunet_default_resampling")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in
                                                                      os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # silences nnU-Net's warnings
        env.setdefault(k, str(work / k))
    env.setdefault("nnUNet_extTrainer", str(REPO / "training"))
    configs = configurations(a, inputs, model, nn_model, folds)
    order = schedule([nnunet_rounds if c.nnunet else a.rounds for c in configs], a.rounds)
    runs: list[RunStats] = []   # in the order run
    load_before = load_average()
    for r, indices in enumerate(order):
        print(f"round {r + 1} of {a.rounds}: " + ", ".join(configs[i].label for i in indices), flush=True)
        runs += [run_configuration(configs[i], r, work, env) for i in indices]
    meta = run_metadata(command_line("benchmarks.studies.compare_nnunet", argv), load_before=load_before)
    load = f"{load_before[0]:.1f} / {meta['load_after'][0]:.1f}"
    return _finish(a, runs, model, model_desc, threads, load, device, stem, meta)


def _output_file(r: RunStats) -> Path:
    return Path(r.command[r.command.index("-o") + 1]) / f"{CASE}.nii.gz"


def _finish(a, runs: list[RunStats], model: Path, model_desc: str, threads: int, load: str, device: str,
            stem: Path, meta: dict | None) -> int:
    """Dice agreement from the outputs in a.work (the last round's: the runs are deterministic), the
    report, and the saved .md/.json."""
    ds = json.loads((model / "dataset.json").read_text())
    label_names = {int(v): k for k, v in ds["labels"].items() if isinstance(v, int)}
    by = summarise(runs)
    outputs = {label: _output_file(s.runs[-1]) for label, s in by.items()}
    dice: dict[str, dict] = {}
    counts: dict[int, int] = {}
    organs = sorted(lab for lab in label_names if lab)
    truth_dice: dict[str, float] = {}
    truth_file = a.work / "truth" / f"{CASE}.nii.gz"
    if truth_file.is_file():
        truth = read_labels(truth_file)
        for label, f in outputs.items():
            if f.is_file():
                truth_dice[label] = float(np.mean(list(dice_per_label(truth, read_labels(f), organs).values())))
    ours_out = outputs.get(OURS)
    if ours_out is not None and ours_out.is_file():
        ref = read_labels(ours_out)
        counts = {lab: int((ref == lab).sum()) for lab in organs}
        for label, f in outputs.items():
            if label != OURS and f.is_file():
                dice[label] = dice_per_label(ref, read_labels(f), organs)
    text = report(runs, dice, label_names, device, model_desc, threads, load, counts, truth_dice)
    if meta:
        text = metadata_markdown(meta) + "\n" + text
    print()
    print(text)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {"to_file_s": TO_FILE, "to_exit_s": TO_EXIT, "peak_rss_mib": PEAK_RSS, "startup_s": startup_s,
               "first_tile_s": first_tile_s}
    medians = {label: {"runs": len(s.runs), "returncode": s.returncode, "timings": s.timings,
                       **{k: {"median": s.median(m), "min_max": s.span(m)} for k, m in metrics.items()}}
               for label, s in by.items()}
    loads = load_range(runs)
    payload = {"metadata": meta, "device": device, "torch_threads": threads, "load_average_1min": load,
               "load_average_1min_range": loads, "rounds": len({r.round for r in runs}), "model": model_desc,
               "model_dir": str(model), "medians": medians, "runs": [asdict(r) for r in runs],
               "label_voxels_ours": counts, "dice_reference": OURS,
               "dice": {k: {str(lab): v for lab, v in d.items()} for k, d in dice.items()},
               "mean_dice_vs_truth": truth_dice}
    write_text(f"{stem}.md", text)
    write_json(f"{stem}.json", payload)
    print(f"wrote {stem}.md and {stem}.json")
    return 0 if all(r.returncode == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
