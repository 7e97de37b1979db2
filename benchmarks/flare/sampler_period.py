"""Real polling period of the two sampler timings (lean, official), and what each query costs.

    python -m benchmarks.flare.sampler_period                    # both timings, idle and with 2 busy processes
    python -m benchmarks.flare.sampler_period --seconds 30 --busy 0 4 --memory gpu -o benchmarks/results

The official AUC_GPU_Time is a plain sum of samples times 0.1 s, so it depends on how many samples a
run gets, i.e. on the real period: 0.1 s of sleep plus the time the loop's queries take (docs/
efficiency.md). This tool runs each sampler for `--seconds` (sampling this process's own memory on a
CPU, NVML on a GPU) and reports the period from its timestamps, and separately times each query the
loop makes per sample (in this process, `--calls` times each). `--busy N` adds N processes spinning on
the CPU, as an inference run does, to show how the period stretches under load.

For the GPU check (one call, on a machine with a GPU): `measure("official", 20, memory="gpu")`.
Writes `sampler_period_<machine>.md` and `.json` under `-o/--output` (a folder), atomically.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import command_line, load_average, metadata_markdown, results_dir, run_metadata, write_json, write_text

from .sampler import (
    MIB,
    SAMPLER_MODES,
    SamplerSet,
    _cpu_split,
    _make_source,
    official_cpu_split,
    resolve_source,
)



def _quantile(values: Sequence[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def _period_stats(res: dict, seconds: float, interval: float) -> dict:
    ts = res["timestamps"]
    if len(ts) < 3:
        raise RuntimeError(f"{res['sampler']} sampler: only {len(ts)} samples in {seconds:.1f} s")
    periods = [b - a for a, b in zip(ts, ts[1:])]
    mean = statistics.fmean(periods)
    return {"mode": res["sampler"], "source": res["source"], "device": res["device"], "interval_s": interval,
            "window_s": round(seconds, 3), "samples": len(ts), "period_mean_s": mean,
            "period_median_s": statistics.median(periods), "period_p95_s": _quantile(periods, 0.95),
            "period_max_s": max(periods), "auc_per_s_at_1000_mib": 1000 * interval / mean}


def measure_together(modes: Sequence[str] = SAMPLER_MODES, seconds: float = 20.0, memory: str = "auto",
                     gpu_index: int = 0, interval: float = 0.1) -> list[dict]:
    """Run one sampler per timing in `modes` side by side (same window, same load) for `seconds`;
    per timing: the real period (s: mean, median, p95, max), the number of samples, and the AUC a
    constant 1000 MiB gives per second of run (plain sum x 0.1: 1000 x 0.1 / period, 1000 exactly at
    the nominal period), with the 1-minute load average before and after."""
    spec = resolve_source(memory, gpu_index, log=lambda m: print(m, file=sys.stderr))
    sset = SamplerSet(spec, interval, tuple(modes)).start()
    sset.attach(os.getpid())
    load_before = load_average()
    time.sleep(seconds)
    by_mode = sset.stop()
    load_after = load_average()
    # The samplers start one after the other: compare them over the window they all covered.
    lo = max(r["timestamps"][0] for r in by_mode.values() if r["timestamps"])
    hi = min(r["timestamps"][-1] for r in by_mode.values() if r["timestamps"])
    for r in by_mode.values():
        r["timestamps"] = [t for t in r["timestamps"] if lo <= t <= hi]
    return [{**_period_stats(by_mode[m], hi - lo, interval), "load_before": load_before,
             "load_after": load_after} for m in modes]


def measure(mode: str, seconds: float = 20.0, memory: str = "auto", gpu_index: int = 0,
            interval: float = 0.1) -> dict:
    """The `mode` sampler alone for `seconds`: measure_together's numbers for one timing. On a GPU
    (memory="gpu") the official timing makes every NVML query of the official loop."""
    return measure_together((mode,), seconds, memory, gpu_index, interval)[0]


def _time_call(fn: Callable[[], object], calls: int) -> float:
    """Mean seconds per call of fn over `calls` calls."""
    fn()  # first call outside the timing (imports, lazy initialisation)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def query_costs(calls: int = 2000, memory: str = "auto", gpu_index: int = 0) -> dict[str, dict[str, float]]:
    """Mean seconds per call of each query the lean and the official loop make per sample, measured
    here (in this process): {mode: {query: seconds}}. The NVML rows appear only where NVML works."""
    import multiprocessing as mp

    import psutil
    spec = resolve_source(memory, gpu_index, log=lambda m: None)
    before = psutil.cpu_times()
    costs: dict[str, dict[str, float]] = {"lean": {}, "official": {}}
    if spec.kind == "rss-tree":  # the CPU fallback's memory read, the same in both timings
        import multiprocessing as mp_
        pid = mp_.get_context("spawn").Value("i", os.getpid())
        src = _make_source(spec, pid)
        costs["lean"]["RSS of this process tree (CPU fallback)"] = _time_call(src.read, calls)
        costs["official"]["RSS of this process tree (CPU fallback)"] = costs["lean"][
            "RSS of this process tree (CPU fallback)"]
    if spec.kind == "nvml":
        from .sampler import _NvmlAllGpusSource, _NvmlSource
        lean_src, official_src = _NvmlSource(gpu_index), _NvmlAllGpusSource(gpu_index)
        try:
            costs["lean"]["NVML memory info of one GPU"] = _time_call(lean_src.read, calls)
            costs["official"]["NVML count + PCI info + memory info of every GPU"] = _time_call(
                official_src.read, calls)
        finally:
            lean_src.close()
            official_src.close()
    costs["lean"]["psutil.cpu_times() + split"] = _time_call(lambda: _cpu_split(before, psutil.cpu_times()), calls)
    costs["official"]["psutil.cpu_times() + split (+0.1)"] = _time_call(
        lambda: official_cpu_split(before, psutil.cpu_times()), calls)
    ram = _time_call(lambda: psutil.virtual_memory().used / MIB, calls)
    costs["lean"]["psutil.virtual_memory()"] = ram
    costs["official"]["psutil.virtual_memory()"] = ram
    with mp.get_context("spawn").Manager() as manager:
        lists = [manager.list() for _ in range(3)]

        def appends():
            for lst in lists:
                lst.append(1.0)
        costs["official"]["3 Manager list appends"] = _time_call(appends, calls)
    return costs


def _start_busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:   # only the processes started here, by their own handle
        p.kill()
        p.wait()


def gpu_name() -> str | None:
    from .sampler import nvml_probe
    return nvml_probe(0)[0]


def markdown(results: list[dict], costs: dict, meta: dict) -> str:
    lines = ["### Sampler period: lean vs official timing", "", metadata_markdown(meta),
             "| Timing | Extra busy processes | Memory source | Samples | Mean period (s) | Median (s) | "
             "p95 (s) | Max (s) | AUC per s at 1000 MiB (MiB·s) | Load avg 1 min before / after |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['mode']} | {r['busy']} | {r['source']} | {r['samples']} | {r['period_mean_s']:.4f} | "
                     f"{r['period_median_s']:.4f} | {r['period_p95_s']:.4f} | {r['period_max_s']:.4f} | "
                     f"{r['auc_per_s_at_1000_mib']:.1f} | {r['load_before'][0]:.2f} / {r['load_after'][0]:.2f} |")
    lines += ["", "Cost of each query per sample (mean over repeated calls in one process, no extra busy processes):", "",
              "| Timing | Query | Mean per call (ms) |", "|---|---|---:|"]
    for mode, parts in costs.items():
        for q, sec in parts.items():
            lines.append(f"| {mode} | {q} | {sec * 1e3:.3f} |")
    lines += ["", "The timings in one row group ran side by side, one process each, over the same window. "
              "The official AUC_GPU_Time is sum(samples) x 0.1: for a constant memory M over T seconds it "
              "is M x 0.1 x T / period, so the ratio of the two timings' mean periods is the ratio of the "
              "AUCs they give for the same run."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flare.sampler_period", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--modes", nargs="+", choices=list(SAMPLER_MODES), default=list(SAMPLER_MODES))
    p.add_argument("--seconds", type=float, default=20.0, help="sampling time per timing and load")
    p.add_argument("--busy", nargs="+", type=int, default=[0, 2], help="extra spinning processes (per row)")
    p.add_argument("--memory", choices=["auto", "gpu", "cpu"], default="auto")
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--calls", type=int, default=2000, help="calls per query for the cost table")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder for sampler_period.md and .json (default benchmarks/results/sampler_period/<machine>)")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.seconds <= 0.5 or any(b < 0 for b in a.busy):
        p.error("--seconds must be > 0.5 and --busy >= 0")
    gpu = gpu_name() if a.memory != "cpu" else None
    load_before = load_average()
    results = []
    for busy in a.busy:
        procs = _start_busy(busy)
        try:
            for r in measure_together(a.modes, a.seconds, a.memory, a.gpu):
                r["busy"] = busy
                results.append(r)
                if not a.quiet:
                    print(f"{r['mode']:8s} busy={busy}: mean period {r['period_mean_s']:.4f} s over {r['samples']} "
                          f"samples (load {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f})")
        finally:
            _stop_busy(procs)
    costs = query_costs(a.calls, a.memory, a.gpu)
    on_gpu = any(r["source"] == "nvml" for r in results)
    meta = run_metadata(command_line("benchmarks.flare.sampler_period", argv), gpu=gpu if on_gpu else None,
                        load_before=load_before)
    text = markdown(results, costs, meta)
    stem = (a.output or results_dir("sampler_period", gpu=meta["machine"]["gpu"])) / "sampler_period"
    write_text(stem.with_suffix(".md"), text)
    write_json(stem.with_suffix(".json"), {"metadata": meta, "results": results, "query_costs_s": costs})
    print(text)
    print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
