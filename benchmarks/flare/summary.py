"""Per-case efficiency summary, computed exactly as the organisers' load_json.py does, plus variants.

Input: one JSON per case as written by benchmarks.flare.sampler / benchmarks.flare.harness (or by the official
resource_eval.py: the keys `gpu_memory` (MiB samples, one per poll) and `time` (s) are all that the
official numbers need).

Official numbers (the organisers' load_json.py; docs/efficiency.md), per case:
    Name         = the JSON file's name up to its first dot + ".nii.gz"   (amos_0540.json -> amos_0540.nii.gz,
                                                                   the name the accuracy scorer writes)
    Time         = round(time, 2)                                  seconds
    MaxGPU_Mem   = round(max(samples))                             MiB
    AUC_GPU_Time = round(sum(samples) * 0.1)                       MiB*s, a plain sum times the
                                                                   nominal period, not an integral
    MaxCPU_Utilization, AUC_CPU_Time, MaxRAM, AUC_RAM_Time         system-wide, "for debug purpose"
Rounding is numpy's (half to even), as in load_json.py.

Beside them (not official): the tolerance-adjusted values used at ranking time
    Time_tol     = max(0, time - T_time)                           (T_time = 15 s for Task 3)
    AUC_GPU_tol  = sum(max(0, m - T_gpu)) * 0.1                    (T_gpu = 4096 MiB for Task 3)
and the trapezoid integral of the samples over their real timestamps (the real poll period is a bit
longer than 0.1 s, so the official AUC under-counts; this column says by how much).

Sampler timings (benchmarks.flare.sampler): the official keys hold the trace of the JSON's `sampler`
(`lean` when absent: files written before the official timing existed); a JSON may hold the other
timing's trace of the same run under `traces`. Each timing gets its own MaxGPU_Mem_<mode>,
AUC_GPU_Time_<mode> and Period_<mode>_s columns ('' when the run did not record it).
CSV rows written before Name carried the ending (`amos_0540`) still match: `case_id()` accepts both.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.files.atomic import atomic_output

NOMINAL_INTERVAL_S = 0.1
TIME_TOLERANCE_S = 15.0      # FLARE 2024 Task 3 (method paper)
GPU_TOLERANCE_MIB = 4096.0   # FLARE 2024 Task 3 (method paper): 4 GB

NAME_SUFFIX = ".nii.gz"      # load_json.py appends it to the JSON's stem
SAMPLER_TIMINGS = ("official", "lean")
OFFICIAL_COLUMNS = ["Name", "Time", "MaxGPU_Mem", "AUC_GPU_Time", "MaxCPU_Utilization", "AUC_CPU_Time",
                    "MaxRAM", "AUC_RAM_Time"]
EXTRA_COLUMNS = ["Time_tol", "AUC_GPU_Time_tol", "AUC_GPU_Time_trapz", "Samples", "Mean_period_s", "Sampler",
                 *[c for m in SAMPLER_TIMINGS for c in (f"MaxGPU_Mem_{m}", f"AUC_GPU_Time_{m}", f"Period_{m}_s")],
                 "Memory_source", "Device", "Output", "Image_size", "Load_1min"]


def official_name(json_path: str | os.PathLike) -> str:
    """load_json.py's Name for a case JSON: the file name up to its first dot, plus '.nii.gz'."""
    return Path(json_path).name.split(".")[0] + NAME_SUFFIX


def case_id(name: str) -> str:
    """Case id from a Name, with or without the ending ('amos_0540.nii.gz' and 'amos_0540' -> 'amos_0540')."""
    return name[: -len(NAME_SUFFIX)] if name.endswith(NAME_SUFFIX) else name


@dataclass
class CaseTrace:
    """Raw samples of one case. `memory_mib[i]` was read at `timestamps_s[i]` (s, any origin)."""
    name: str
    time_s: float | None
    memory_mib: list[float]
    timestamps_s: list[float] | None = None
    cpu_list: list[list[float]] | None = None   # [user %, system %, idle %] per poll (system-wide)
    ram_mib: list[float] | None = None          # system-wide used RAM per poll
    source: str = "nvml"                        # nvml | rss-tree | container-rss | container-stats
    device: str = ""
    output: str = ""                            # ok | missing | geometry mismatch: ... ('' = unknown)
    image_size: str = ""
    run_start_s: float | None = None            # on the timestamps' clock
    sampler: str = "lean"                       # timing of the trace above (benchmarks.flare.sampler)
    other_traces: dict = field(default_factory=dict)  # {timing: {"gpu_memory": [...], "timestamps": [...]}}
    meta: dict = field(default_factory=dict)


def _np_round(x, decimals: int = 0) -> int | float:
    """np.round as load_json.py applies it, as a plain Python number of the same kind: integer samples
    stay integers ('60' in the CSV), floats stay floats ('60.0'), exactly as its CSV writes them."""
    return np.round(x, decimals).item()


def official_time(time_s: float) -> float:
    """Time column: seconds rounded to 2 decimals (numpy rounding)."""
    return _np_round(time_s, 2)


def official_max(samples: Sequence[float]) -> float:
    """MaxGPU_Mem column: the largest sample, rounded to an integer (MiB)."""
    if len(samples) == 0:
        raise ValueError("no memory samples: the sampler recorded nothing")
    return _np_round(max(samples))


def official_auc(samples: Sequence[float], interval_s: float = NOMINAL_INTERVAL_S) -> float:
    """AUC_GPU_Time column: round(sum(samples) * interval) in MiB*s (plain sum, nominal period)."""
    return _np_round(sum(samples) * interval_s)


def tolerant_time(time_s: float, tolerance_s: float = TIME_TOLERANCE_S) -> float:
    """Running time after the ranking tolerance: max(0, time - tolerance), seconds."""
    return max(0.0, float(time_s) - tolerance_s)


def tolerant_auc(samples: Sequence[float], tolerance_mib: float = GPU_TOLERANCE_MIB,
                 interval_s: float = NOMINAL_INTERVAL_S) -> float:
    """GPU area after the ranking tolerance: sum(max(0, m - tolerance)) * interval, MiB*s."""
    return float(sum(max(0.0, float(m) - tolerance_mib) for m in samples) * interval_s)


def trapezoid_auc(timestamps_s: Sequence[float], samples: Sequence[float]) -> float:
    """Integral of memory over the real sample times (trapezoid rule), MiB*s."""
    if len(timestamps_s) != len(samples):
        raise ValueError(f"{len(timestamps_s)} timestamps for {len(samples)} samples")
    if len(samples) < 2:
        return 0.0
    t = np.asarray(timestamps_s, dtype=np.float64)
    m = np.asarray(samples, dtype=np.float64)
    return float(np.sum((m[1:] + m[:-1]) * 0.5 * np.diff(t)))


def load_case(path: str | os.PathLike) -> CaseTrace:
    """Read one case JSON (ours or the official harness's). `name` is the case id: the file name up to the
    first dot (the row's Name adds '.nii.gz', as load_json.py does)."""
    path = Path(path)
    try:
        js = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read case JSON ({e})") from None
    if "gpu_memory" not in js:
        raise ValueError(f"{path}: no 'gpu_memory' samples in this JSON")
    return CaseTrace(
        name=path.name.split(".")[0],
        time_s=js.get("time"),
        memory_mib=list(js["gpu_memory"]),  # as stored: int samples give int columns, as in load_json.py
        timestamps_s=js.get("timestamps"),
        cpu_list=js.get("cpu_list"),
        ram_mib=js.get("RAM_list"),
        source=js.get("memory_source", "nvml"),
        device=js.get("device", ""),
        output=js.get("output", ""),
        image_size=js.get("image_size", ""),
        run_start_s=js.get("run_start"),
        sampler=js.get("sampler", "lean"),  # every JSON written before `sampler` existed was lean-timed
        other_traces=js.get("traces", {}),
        meta={k: v for k, v in js.items()
              if k not in {"gpu_memory", "timestamps", "cpu_list", "RAM_list", "traces"}},
    )


def summarise(trace: CaseTrace, interval_s: float = NOMINAL_INTERVAL_S,
              time_tolerance_s: float = TIME_TOLERANCE_S,
              gpu_tolerance_mib: float = GPU_TOLERANCE_MIB) -> dict:
    """One CSV row (official columns, then the extra ones) for a case."""
    mem = trace.memory_mib
    # load_json.py: a JSON without 'time' gets time = interval * number of samples.
    time_s = trace.time_s if trace.time_s is not None else interval_s * len(mem)
    row: dict = {"Name": case_id(trace.name) + NAME_SUFFIX, "Time": official_time(time_s),
                 "MaxGPU_Mem": official_max(mem), "AUC_GPU_Time": official_auc(mem, interval_s)}
    if trace.cpu_list:
        used = [100 - c[2] for c in trace.cpu_list]  # 100, not 100.0: int stays int, as load_json.py
        row["MaxCPU_Utilization"] = _np_round(max(used), 2)
        row["AUC_CPU_Time"] = _np_round(sum(used) * interval_s, 2)
    else:
        row["MaxCPU_Utilization"] = row["AUC_CPU_Time"] = ""
    if trace.ram_mib:
        row["MaxRAM"] = _np_round(max(trace.ram_mib), 2)
        row["AUC_RAM_Time"] = _np_round(sum(trace.ram_mib) * interval_s)
    else:
        row["MaxRAM"] = row["AUC_RAM_Time"] = ""
    row["Time_tol"] = round(tolerant_time(time_s, time_tolerance_s), 2)
    row["AUC_GPU_Time_tol"] = round(tolerant_auc(mem, gpu_tolerance_mib, interval_s), 1)
    ts = trace.timestamps_s
    row["AUC_GPU_Time_trapz"] = round(trapezoid_auc(ts, mem), 1) if ts else ""
    row["Samples"] = len(mem)
    row["Mean_period_s"] = _mean_period(ts)
    row["Sampler"] = trace.sampler
    by_timing = {trace.sampler: (mem, ts)}
    for timing, tr in trace.other_traces.items():
        by_timing.setdefault(timing, (tr.get("gpu_memory") or [], tr.get("timestamps")))
    for timing in SAMPLER_TIMINGS:
        m, t = by_timing.get(timing, ([], None))
        row[f"MaxGPU_Mem_{timing}"] = official_max(m) if m else ""
        row[f"AUC_GPU_Time_{timing}"] = official_auc(m, interval_s) if m else ""
        row[f"Period_{timing}_s"] = _mean_period(t)
    row["Memory_source"] = trace.source
    row["Device"] = trace.device
    row["Output"] = trace.output
    row["Image_size"] = trace.image_size
    load = trace.meta.get("load_avg_1min")
    row["Load_1min"] = f"{load[0]:.2f} / {load[1]:.2f}" if load else ""   # before / after the case
    return row


def _mean_period(ts) -> float | str:
    """Mean time between polls (s, 4 decimals), '' without at least two timestamps."""
    return round(float(np.mean(np.diff(ts))), 4) if ts and len(ts) > 1 else ""


def read_efficiency_csv(path: str | os.PathLike) -> dict[str, dict]:
    """{case id: row} from an efficiency CSV: ours (any age: Name with or without '.nii.gz') or the
    organisers'. Numbers become floats; text stays text."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ValueError(f"{path}: cannot read efficiency CSV ({e})") from None
    if rows and "Name" not in rows[0]:
        raise ValueError(f"{path}: no 'Name' column; is this an efficiency CSV?")
    out = {}
    for r in rows:
        conv = {}
        for k, v in r.items():
            try:
                conv[k] = float(v) if k != "Name" and v != "" else v
            except ValueError:
                conv[k] = v
        out[case_id(r["Name"])] = conv
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_output(path, mode=0o644) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)


def write_csv(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """CSV with the official columns first (load_json.py order), then the extra columns."""
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=OFFICIAL_COLUMNS + EXTRA_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    path = Path(path)
    _atomic_write_text(path, buf.getvalue())
    return path


def _mean(values: Iterable) -> float | None:
    v = [float(x) for x in values if x != "" and x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(v) / len(v) if v else None


def _fmt(x, nd=1) -> str:
    if x is None or x == "":
        return "-"
    return f"{x:,.{nd}f}" if nd else f"{x:,.0f}"


def markdown_table(rows: Sequence[dict], title: str = "", device: str = "",
                   time_tolerance_s: float = TIME_TOLERANCE_S,
                   gpu_tolerance_mib: float = GPU_TOLERANCE_MIB) -> str:
    """Markdown laid out like the paper's Table 6 (case, size, time, max GPU, total GPU), mean row last,
    followed by a second table with the tolerance-adjusted values and the trapezoid area."""
    sources = sorted({r.get("Memory_source", "") for r in rows})
    gpu = sources == ["nvml"]
    what = "GPU" if gpu else "memory"
    lines = []
    if title:
        lines += [f"### {title}", ""]
    if device:
        lines += [f"Device: {device}", ""]
    if not gpu:
        lines += [(f"Memory is the CPU fallback ({', '.join(s for s in sources if s)}: resident memory, "
                  "not GPU memory), summed like the official GPU numbers."), ""]
    lines += [f"| Case | Image size | Running time (s) | Max {what} (MB) | Total {what} (MB·s), "
              f"official-timed sampler | Total {what} (MB·s), lean sampler |",
              "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        flag = "" if r.get("Output") in ("", "ok") else f" ({r['Output']})"
        lines.append(f"| {r['Name']}{flag} | {r.get('Image_size', '')} | {_fmt(r['Time'], 2)} | "
                     f"{_fmt(r['MaxGPU_Mem'], 0)} | {_fmt(r.get('AUC_GPU_Time_official'), 0)} | "
                     f"{_fmt(r.get('AUC_GPU_Time_lean'), 0)} |")
    lines.append(f"| **mean** | | {_fmt(_mean(r['Time'] for r in rows), 2)} | "
                 f"{_fmt(_mean(r['MaxGPU_Mem'] for r in rows), 0)} | "
                 f"{_fmt(_mean(r.get('AUC_GPU_Time_official') for r in rows), 0)} | "
                 f"{_fmt(_mean(r.get('AUC_GPU_Time_lean') for r in rows), 0)} |")
    timings = sorted({r.get("Sampler", "lean") for r in rows})
    lines += ["", (f"Max and the CSV's AUC_GPU_Time come from the {'/'.join(timings)} sampler's trace. "
                   "Official-timed: the organisers' per-sample queries then sleep 0.1 s, so its plain sum "
                   "x 0.1 estimates what they will compute; lean: our loop, denser, the better picture of "
                   "the curve (docs/efficiency.md). '-': not recorded in this run.")]
    lines += ["", (f"Tolerance-adjusted (time - {time_tolerance_s:g} s, memory - {gpu_tolerance_mib:g} MB per "
              f"sample, floored at 0) and the trapezoid over real timestamps:"), "",
              ("| Case | Time - tol. (s) | Total - tol. (MB·s) | Total, trapezoid (MB·s) | Samples | "
               "Period, official-timed (s) | Period, lean (s) | Load avg 1 min, before / after |"),
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['Name']} | {_fmt(r['Time_tol'], 2)} | {_fmt(r['AUC_GPU_Time_tol'], 0)} | "
                     f"{_fmt(r['AUC_GPU_Time_trapz'], 0)} | {r['Samples']} | "
                     f"{_fmt(r.get('Period_official_s'), 4)} | {_fmt(r.get('Period_lean_s'), 4)} | "
                     f"{r.get('Load_1min') or '-'} |")
    lines.append(f"| **mean** | {_fmt(_mean(r['Time_tol'] for r in rows), 2)} | "
                 f"{_fmt(_mean(r['AUC_GPU_Time_tol'] for r in rows), 0)} | "
                 f"{_fmt(_mean(r['AUC_GPU_Time_trapz'] for r in rows), 0)} | | "
                 f"{_fmt(_mean(r.get('Period_official_s') for r in rows), 4)} | "
                 f"{_fmt(_mean(r.get('Period_lean_s') for r in rows), 4)} | |")
    return "\n".join(lines) + "\n"


def plot_traces(traces: Sequence[CaseTrace], path: str | os.PathLike, title: str = "") -> Path:
    """One PNG: memory (MiB) over time (s from the run's start) for every case."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    for tr in traces:
        if tr.timestamps_s:
            t0 = tr.run_start_s if tr.run_start_s is not None else tr.timestamps_s[0]
            x = [t - t0 for t in tr.timestamps_s]
        else:
            x = [i * NOMINAL_INTERVAL_S for i in range(len(tr.memory_mib))]
        ax.plot(x, tr.memory_mib, lw=1.2, label=tr.name)
    src = {tr.source for tr in traces}
    ax.set_xlabel("Time since run start (s)")
    ax.set_ylabel("GPU memory (MB)" if src == {"nvml"} else f"Memory (MB, {'/'.join(sorted(src))})")
    ax.set_title(title or "Memory over time")
    ax.grid(alpha=0.3)
    if traces:
        ax.legend(fontsize=8, ncol=2)
    path = Path(path)
    with atomic_output(path, mode=0o644) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path


def summarise_folder(folder: str | os.PathLike, out_prefix: str | os.PathLike | None = None,
                     title: str = "", device: str = "", **kw) -> tuple[list[dict], Path, Path, Path]:
    """Summarise every `*.json` case file in `folder` (sorted by name, as load_json.py does).

    Writes `<out_prefix>_Efficiency.csv`, `<out_prefix>_memory.png`, `<out_prefix>_table.md`;
    returns (rows, csv, png, md). `out_prefix` defaults to `<folder>/summary`.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.json") if "Mask" not in p.name)
    if not files:
        raise ValueError(f"{folder}: no case JSON files")
    traces = [load_case(p) for p in files]
    rows = [summarise(t, **kw) for t in traces]
    prefix = Path(out_prefix) if out_prefix is not None else folder / "summary"
    if not device:
        device = next((t.device for t in traces if t.device), "")
    csv_path = write_csv(rows, f"{prefix}_Efficiency.csv")
    png = plot_traces(traces, f"{prefix}_memory.png",
                      f"{title}\n{device}" if title and device and device not in title else (title or device))
    md = Path(f"{prefix}_table.md")
    _atomic_write_text(md, markdown_table(
        rows, title, device, time_tolerance_s=kw.get("time_tolerance_s", TIME_TOLERANCE_S),
        gpu_tolerance_mib=kw.get("gpu_tolerance_mib", GPU_TOLERANCE_MIB)))
    return rows, csv_path, png, md


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flare.summary",
                                description="Summarise a folder of per-case JSON traces like load_json.py.")
    p.add_argument("folder", help="folder with <case>.json files")
    p.add_argument("-o", "--output", help="folder for summary_Efficiency.csv, summary_memory.png and "
                                           "summary_table.md (default: FOLDER)")
    p.add_argument("--title", default="")
    p.add_argument("--interval", type=float, default=NOMINAL_INTERVAL_S, help="nominal period (s)")
    p.add_argument("--time-tolerance", type=float, default=TIME_TOLERANCE_S, help="seconds")
    p.add_argument("--gpu-tolerance", type=float, default=GPU_TOLERANCE_MIB, help="MiB")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    _rows, c, g, m = summarise_folder(a.folder, Path(a.output or a.folder) / "summary", a.title, interval_s=a.interval,
                                     time_tolerance_s=a.time_tolerance, gpu_tolerance_mib=a.gpu_tolerance)
    print(m.read_text())
    print(f"wrote {c}, {g}, {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
