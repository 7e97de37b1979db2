"""Two checkouts of the predictor (say, before and after a change) on the same cases, interleaved.

    python -m benchmarks.studies.ab_checkouts --before DIR [--after DIR] [--rounds 3] [--after-args='...']

Each round runs `python -m inference` once per configuration, in turn, on the same input folder (the
comparison case of benchmarks.studies.compare_nnunet and the sample cases), each in a fresh process
from its own checkout (the checkout's folder is the working directory, so its `inference` package is
the one imported; the Python environment is this one). Per run: wall time from process start to exit,
peak RSS (the kernel's maximum resident set of the child), start-up (imports + model load, from the
CLI's --timings) and the seconds per stage summed over the cases. The table shows medians over the
rounds with the load average beside them; the JSON keeps every run. Outputs of the two checkouts are
compared voxel by voxel (with the same precision they should be equal).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (REPO, SCRATCH, command_line, load_average, metadata_markdown, results_dir,
                               run_metadata, write_json, write_text)
from benchmarks.studies.compare_nnunet import CASE, write_phantom_case

TOOL = "ab_checkouts"


def prepare_inputs(folder: Path) -> Path:
    """The comparison case plus the sample cases, in one input folder."""
    inputs = folder / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    write_phantom_case(inputs, folder / "truth")
    for sample in sorted((REPO / "samples" / "inputs").glob("*_0000.nii.gz")):
        link = inputs / sample.name
        if not link.exists():
            link.symlink_to(sample)
    return inputs


def run_once(name: str, checkout: Path, args: list[str], inputs: Path, work: Path) -> dict:
    """One `python -m inference` run of `checkout`; its wall time, peak RSS and timings."""
    out, timings = work / name / "out", work / name / "timings.json"
    argv = [sys.executable, "-m", "inference", "-i", str(inputs), "-o", str(out), "-m",
            str(REPO / "weights"), "-q", "--timings", str(timings), *args]
    log, rss = work / name / "log.txt", work / name / "maxrss.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    # GNU time reports the child's peak RSS: a child forked from this (large) process would carry this
    # process's high-water mark into its own (Linux keeps it across exec)
    argv = ["/usr/bin/time", "-f", "%M", "-o", str(rss), *argv]
    start = time.perf_counter()
    with open(log, "w") as sink:
        done = subprocess.run(argv, cwd=checkout, stdout=sink, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{log.read_text()[-2000:]}")
    peak_kib = int(rss.read_text().split()[-1])
    t = json.loads(timings.read_text())
    stages: dict[str, float] = {}
    for case in t["cases"]:
        for stage, seconds in case["seconds"].items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    return {"config": name, "wall_s": wall, "peak_rss_mib": peak_kib / 1024,
            "startup_s": t["startup"]["imports"] + t["startup"]["model_load"], "stages_s": stages,
            "network": t["network"], "load": load_average()}


def checkout_commit(checkout: Path) -> str:
    """The commit a checkout is at (short hash, +dirty when it has changes), for the results file."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short=12", "HEAD") or "not a git checkout"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def median(runs: list[dict], key) -> float | None:
    values = [key(r) for r in runs if key(r) is not None]
    return statistics.median(values) if values else None


def labels_equal(work: Path, a: str, b: str) -> dict[str, int]:
    """Voxels that differ between two configurations' outputs, per case."""
    import SimpleITK as sitk
    out = {}
    for path in sorted((work / a / "out").glob("*.nii.gz")):
        other = work / b / "out" / path.name
        x, y = (sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in (path, other))
        out[path.name] = int(np.count_nonzero(x != y))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.ab_checkouts", description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="checkout of the predictor before the change")
    p.add_argument("--after", type=Path, default=REPO, help="checkout after the change (default: this one)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--before-args", default="", help="extra arguments of the before runs, one string "
                                                      "(--before-args='--precision fp32')")
    p.add_argument("--after-args", default="", help="extra arguments of the after runs, one string")
    p.add_argument("--also-after-default", action="store_true",
                   help="a third configuration: the after checkout with its default arguments")
    p.add_argument("--name", default="ab", help="results file name")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder for NAME.md and NAME.json (default benchmarks/results/ab_checkouts/<machine>)")
    p.add_argument("--work", type=Path, default=SCRATCH / TOOL,
                   help="inputs and the runs' outputs (default benchmarks/results/tmp/ab_checkouts)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    work = a.work
    inputs = prepare_inputs(work)
    configs = [("before", a.before, shlex.split(a.before_args)), ("after", a.after, shlex.split(a.after_args))]
    if a.also_after_default:
        configs.append(("after_default", a.after, []))
    meta = run_metadata(command_line("benchmarks.studies.ab_checkouts", argv), load_before=load_average())
    runs = []
    for r in range(a.rounds):
        for name, checkout, args in configs:
            runs.append({"round": r, **run_once(name, checkout.resolve(), args, inputs, work)})
            print(f"round {r}: {name}: {runs[-1]['wall_s']:.2f} s, load {runs[-1]['load'][0]:.2f}", flush=True)
    differing = labels_equal(work, "before", "after")
    rows = ["| configuration | network | wall to exit | peak RSS | start-up | " +
            " | ".join(sorted(runs[0]["stages_s"])) + " | load (1 min) |", "|---" * (6 + len(runs[0]["stages_s"])) + "|"]
    for name, _, _ in configs:
        mine = [r for r in runs if r["config"] == name]
        loads = [r["load"][0] for r in mine]
        rows.append(f"| {name} | {mine[0]['network']} | {median(mine, lambda r: r['wall_s']):.2f} s | "
                    f"{median(mine, lambda r: r['peak_rss_mib']) or 0:.0f} MiB | "
                    f"{median(mine, lambda r: r['startup_s']):.2f} s | " +
                    " | ".join(f"{median(mine, lambda r, s=s: r['stages_s'].get(s)):.2f} s"
                               for s in sorted(runs[0]["stages_s"])) + f" | {min(loads):.2f}-{max(loads):.2f} |")
    commits = {"before": checkout_commit(a.before), "after": checkout_commit(a.after)}
    text = (f"# commit {commits['before']} vs commit {commits['after']}\n\n{metadata_markdown(meta)}\n\nMedians of {a.rounds} interleaved rounds; "
            f"cases: {CASE} (320x290x72) and samples/inputs. Stage seconds are summed over the cases.\n\n"
            + "\n".join(rows) + f"\n\nVoxels differing, before vs after: {differing}\n")
    folder = a.output or results_dir(TOOL)
    write_json(folder / f"{a.name}.json", {**meta, "checkouts": commits, "configs": [c[0] for c in configs], "runs": runs,
                                            "differing_voxels_before_after": differing})
    write_text(folder / f"{a.name}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
