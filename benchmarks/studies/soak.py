"""Soak: one process segments many copies of a sample case; resident memory and per-case time must not
grow with the number of cases (a leak would show in a cohort run of thousands of scans).

    python -m benchmarks.studies.soak [--cases 120] [--sample samples/inputs/phantom_0001_0000.nii.gz]
                                      [-m weights] [-o benchmarks/results/soak/]

The sample is linked under N case names in a temporary folder and segmented by
`inference.api.segment_folder` in this process (model loaded once, as `python -m inference` does).
After each case: seconds (the case's stage timings summed), CPU seconds of the process (all threads;
little moved by other load on a shared machine), current and peak resident memory
(VmRSS, VmHWM of /proc/self/status) and the 1-minute load average beside them (a busy machine slows
cases; it does not grow memory). Done when the peak RSS after all N cases is within 40 MB of the peak
after the first 12.

Self-contained on purpose (no benchmarks.* helpers). Writes soak_<N>cases.json under --output with the
command, date, git commit, CPU model and load averages.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.common import own_memory_mb

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SAMPLE = REPO / "samples" / "inputs" / "phantom_0001_0000.nii.gz"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "soak"
REFERENCE_CASES = 12          # the done-when compares the peak after all cases with the peak after these
ALLOWED_GROWTH_MB = 40.0


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system): unlike wall time, barely moved by other
    processes on a shared machine, so growth per case would show a real slowdown."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def link_cases(sample: Path, folder: Path, count: int) -> None:
    """`count` input cases, each a link to `sample` (the reader follows links; no disk used)."""
    for i in range(count):
        (folder / f"soak_{i:04d}_0000.nii.gz").symlink_to(sample.resolve())


def run_soak(cases: int, sample: Path, model_dir: Path, on_case=None) -> list[dict]:
    """Segment `cases` links to `sample`; one record per case (index from 1, ok, seconds, MB, load)."""
    from inference.api import segment_folder
    from inference.loading import load_model
    records: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        inputs, outputs = work / "in", work / "out"
        inputs.mkdir()
        link_cases(sample, inputs, cases)
        model = load_model(model_dir, None, device="cpu")

        cpu_before = [cpu_seconds()]

        def record(result) -> None:
            rss, peak = own_memory_mb()
            cpu_now = cpu_seconds()
            entry = {"index": len(records) + 1, "case": result.case, "ok": result.ok, "error": result.error,
                     "seconds": round(sum(result.timings.values()), 3),
                     "cpu_seconds": round(cpu_now - cpu_before[0], 3), "rss_mb": round(rss, 1),
                     "peak_rss_mb": round(peak, 1), "load1": round(os.getloadavg()[0], 2)}
            cpu_before[0] = cpu_now
            records.append(entry)
            if result.ok:   # keep the output folder small: the label is checked, then not needed
                Path(result.output).unlink()
            if on_case:
                on_case(entry)
        segment_folder(inputs, outputs, model=model, on_result=record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return records


def summarise(records: list[dict]) -> dict:
    """Peak RSS after the first REFERENCE_CASES and after all; median seconds of the first and last 12."""
    def median(values):
        values = sorted(values)
        return values[len(values) // 2] if values else None
    ref = records[min(REFERENCE_CASES, len(records)) - 1]
    last = records[-1]
    growth = last["peak_rss_mb"] - ref["peak_rss_mb"]
    return {"cases": len(records), "failed": sum(not r["ok"] for r in records),
            "peak_rss_mb_after_reference": ref["peak_rss_mb"], "reference_cases": ref["index"],
            "peak_rss_mb_after_all": last["peak_rss_mb"], "peak_growth_mb": round(growth, 1),
            "rss_mb_first": records[0]["rss_mb"], "rss_mb_last": last["rss_mb"],
            "median_seconds_first_12": median([r["seconds"] for r in records[:12]]),
            "median_seconds_last_12": median([r["seconds"] for r in records[-12:]]),
            "median_cpu_seconds_first_12": median([r.get("cpu_seconds", 0.0) for r in records[:12]]),
            "median_cpu_seconds_last_12": median([r.get("cpu_seconds", 0.0) for r in records[-12:]]),
            "allowed_growth_mb": ALLOWED_GROWTH_MB, "within_bound": growth <= ALLOWED_GROWTH_MB}


def print_row(entry: dict) -> None:
    print(f"{entry['index']:5d}  {entry['seconds']:7.2f}  {entry['cpu_seconds']:7.2f}  {entry['rss_mb']:8.1f}  "
          f"{entry['peak_rss_mb']:9.1f}  "
          f"{entry['load1']:5.2f}  {'ok' if entry['ok'] else 'FAILED: ' + str(entry['error'])}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=120)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE, help="the case to link N times")
    parser.add_argument("-m", "--model", type=Path, default=REPO / "weights", help="model folder")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT, help="folder for the JSON result")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    commit = git_commit()   # now: the code this process runs, not what is checked out when it ends
    print(f"soak: {args.cases} cases of {args.sample} with {args.model} on {cpu_model()}; "
          f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    print(" case  seconds  cpu s    rss MB    peak MB  load1  result")
    t0 = time.perf_counter()
    records = run_soak(args.cases, args.sample, args.model, on_case=print_row)
    summary = summarise(records)
    load_after = os.getloadavg()
    print(f"peak RSS after {summary['reference_cases']} cases {summary['peak_rss_mb_after_reference']:.1f} MB, "
          f"after {summary['cases']} {summary['peak_rss_mb_after_all']:.1f} MB (growth "
          f"{summary['peak_growth_mb']:+.1f} MB, bound {ALLOWED_GROWTH_MB:.0f}); median seconds first 12 "
          f"{summary['median_seconds_first_12']}, last 12 {summary['median_seconds_last_12']} (CPU seconds "
          f"{summary['median_cpu_seconds_first_12']}, {summary['median_cpu_seconds_last_12']}); "
          f"load average at end {load_after[0]:.2f}")
    result = {"command": " ".join(["python -m benchmarks.studies.soak", *(argv if argv is not None else sys.argv[1:])]),
              "date": started.isoformat(timespec="seconds"), "git_commit": commit, "cpu": cpu_model(),
              "cpu_count": os.cpu_count(), "load_average_start": [round(v, 2) for v in load_before],
              "load_average_end": [round(v, 2) for v in load_after],
              "wall_seconds": round(time.perf_counter() - t0, 1),
              "sample": str(args.sample.resolve().relative_to(REPO) if args.sample.resolve().is_relative_to(REPO)
                            else args.sample),
              "model": str(args.model), "summary": summary, "cases": records}
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"soak_{args.cases}cases.json"
    from inference.files.atomic import write_json
    write_json(path, result)
    print(f"wrote {path}")
    return 0 if summary["within_bound"] and not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
