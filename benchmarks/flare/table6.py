"""Reproduce the paper's Table 6 (per-case running time, max GPU memory, total GPU memory-time).

    python -m benchmarks.flare.table6                      # GPU if NVML sees one, all 8 cases
    python -m benchmarks.flare.table6 --emulate-rtx3090    # cap the CUDA allocator at 24 GiB (RTX 3090)
    python -m benchmarks.flare.table6 --device cpu --cases amos_0540   # CPU: a subset (the paper model is slow)

One command: writes MRI-like volumes with the paper's eight image sizes (benchmarks.flare.volumes; spacings
by docs/flare.md section 6's assumption), a model folder with the paper's final architecture (random
weights; refuses to run unless it has exactly 30,713,158 parameters), then runs the organiser-style
harness (benchmarks.flare.harness, direct mode: no Docker, so container start-up is not included) for
  ours      python -m inference ... --device DEV           (the model's plans: torch resampling)
  nnU-Net   nnUNetv2_predict_from_modelfolder ... --disable_tta, on the same weights with nnU-Net's
            default (skimage) resampling in the plans; --nnunet-tta keeps its default mirroring
in the same run, and writes under benchmarks/results/table6_<device>/:
  ours/, nnunet/      per-case JSON samples, logs, <label>_Efficiency.csv, _memory.png, _table.md
  table6.md           side by side with the paper's RTX 3090 numbers; every file names the device.
On a CPU the memory columns are resident memory (the sampler's CPU fallback), not GPU memory.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import (REPO, SCRATCH, command_line, load_average, metadata_markdown, results_dir,
                               run_metadata, slugify as slug, write_text)
from testsupport.model_folder import PAPER, model_parameter_count, write_preset

from .nnunet_runner import NNUNET_ENTRY, model_folds, nnunet_command, with_default_resampling
from .harness import SAMPLER_CHOICES, find_cases, run_harness
from .sampler import nvml_probe, resolve_source
from .summary import SAMPLER_TIMINGS, case_id, summarise_folder
from .volumes import PAPER_MEAN, TABLE6, write_table6_cases

CPU_DEFAULT_CASES = ("amos_0540",)


def paper_model(path: Path, log=print) -> Path:
    """The paper-architecture model folder at `path` (written if absent), checked by parameter count."""
    if not (path / "fold_all" / "checkpoint_final.pth").is_file():
        log(f"writing the paper-architecture model (random weights) to {path}")
        write_preset(path, "paper", resampling="torch")
    n = model_parameter_count(path)
    if n != PAPER.expected_parameters:
        raise RuntimeError(f"{path}: network has {n:,} parameters, the paper's has {PAPER.expected_parameters:,}")
    log(f"model {path}: {n:,} parameters (paper: 30.71M)")
    return path


def combined_table(rows: dict[str, dict[str, dict]], device: str, note: str) -> str:
    """Markdown: the paper's numbers beside ours and nnU-Net's per case, means last. `rows`: {run: {case
    id or Name: summary row}}. Totals come per sampler timing (official-timed, lean), '-' where a run
    did not record that timing."""
    rows = {run: {case_id(k): r for k, r in rr.items()} for run, rr in rows.items()}
    runs = list(rows)
    gpu = all(r.get("Memory_source") == "nvml" for rr in rows.values() for r in rr.values())
    mem = "GPU" if gpu else "mem."
    head = ["Case", "Size (x, y, z)", "Paper time (s)"] + [f"{r} time (s)" for r in runs] + \
           ["Paper max GPU (MB)"] + [f"{r} max {mem} (MB)" for r in runs] + \
           ["Paper total GPU (MB·s)"] + [f"{r} total {mem} (MB·s), {t}{'-timed' if t == 'official' else ''}"
                                         for r in runs for t in SAMPLER_TIMINGS]
    lines = [f"### Table 6 reproduction ({device})", "", note, "",
             "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    cases = [c for c in TABLE6 if any(c in rows[r] for r in runs)]
    sums: dict[str, list[float]] = {}

    def cell(run, case, key, nd):
        r = rows[run].get(case)
        if r is None or r.get(key) in (None, ""):
            return "-"
        v = float(r[key])
        sums.setdefault(f"{run}/{key}", []).append(v)
        flag = "" if r.get("Output") in ("", "ok") else "*"
        return f"{v:,.{nd}f}{flag}"

    for c in cases:
        size, (pt, pm, pa) = TABLE6[c]
        sums.setdefault("paper/t", []).append(pt)
        sums.setdefault("paper/m", []).append(pm)
        sums.setdefault("paper/a", []).append(pa)
        line = [c, ", ".join(map(str, size)), f"{pt:.1f}"] + [cell(r, c, "Time", 2) for r in runs] + \
               [f"{pm:,}"] + [cell(r, c, "MaxGPU_Mem", 0) for r in runs] + \
               [f"{pa:,}"] + [cell(r, c, f"AUC_GPU_Time_{t}", 0) for r in runs for t in SAMPLER_TIMINGS]
        lines.append("| " + " | ".join(line) + " |")

    def mean(key, nd):
        v = sums.get(key)
        return f"{sum(v) / len(v):,.{nd}f}" if v else "-"
    lines.append("| " + " | ".join(
        ["**mean of these cases**", "", mean("paper/t", 1)] + [mean(f"{r}/Time", 2) for r in runs] +
        [mean("paper/m", 0)] + [mean(f"{r}/MaxGPU_Mem", 0) for r in runs] +
        [mean("paper/a", 0)] + [mean(f"{r}/AUC_GPU_Time_{t}", 0) for r in runs for t in SAMPLER_TIMINGS]) + " |")
    lines += ["", (f"Paper (RTX 3090, all 110 validation cases): mean {PAPER_MEAN[0]:.0f} s, "
                  f"{PAPER_MEAN[2]:,} MB·s. `*`: output missing or with a wrong geometry. Totals: "
                  "official-timed = the organisers' per-sample queries then sleep 0.1 s (estimates their "
                  "AUC_GPU_Time); lean = our denser loop; '-' = not recorded in that run.")]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flare.table6", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--cases", nargs="+", choices=list(TABLE6),
                   help=f"subset of cases (default: all on a GPU, {' '.join(CPU_DEFAULT_CASES)} on a CPU)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--gpu", type=int, default=0, help="GPU index (NVML and CUDA_VISIBLE_DEVICES for the runs)")
    p.add_argument("--emulate-rtx3090", action="store_true", help="cap the CUDA allocator at 24 GiB")
    p.add_argument("--skip-nnunet", action="store_true", help="only ours")
    p.add_argument("--skip-ours", action="store_true", help="only nnU-Net")
    p.add_argument("--nnunet-tta", action="store_true", help="nnU-Net with its default test-time mirroring")
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--sampler", choices=list(SAMPLER_CHOICES), default="both",
                   help="sampler timing(s), as benchmarks.flare.harness --sampler")
    p.add_argument("--work", type=Path, default=SCRATCH / "table6", help="volumes and model (cached)")
    p.add_argument("-o", "--output", dest="out_dir", type=Path, default=None,
                   help="results folder (default benchmarks/results/table6/<machine>[/rtx3090cap])")
    p.add_argument("--resummarise", action="store_true",
                   help="run nothing: rebuild every CSV/table and table6.md from the per-case JSONs already "
                        "in the output folder (same --device/--emulate-rtx3090/--nnunet-tta as the run)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    load_before = load_average()
    gpu_desc, why = nvml_probe(a.gpu)
    device = a.device
    if device == "auto":
        device = "cuda" if gpu_desc else "cpu"
        if not gpu_desc:
            print(f"no GPU ({why}): running on the CPU")
    if device == "cuda" and not gpu_desc:
        print(f"error: --device cuda but NVML sees no GPU {a.gpu}: {why}", file=sys.stderr)
        return 2
    cases = a.cases or (list(TABLE6) if device == "cuda" else list(CPU_DEFAULT_CASES))
    spec = resolve_source("gpu" if device == "cuda" else "cpu", a.gpu)
    dev_name = spec.device + (", allocator capped at 24 GiB (RTX 3090 emulation)"
                              if a.emulate_rtx3090 and device == "cuda" else "")
    gpu = gpu_desc if device == "cuda" else None
    out = a.out_dir or results_dir("table6", *(["rtx3090cap"] if a.emulate_rtx3090 else []), gpu=gpu)
    meta = lambda: run_metadata(command_line("benchmarks.flare.table6", argv), gpu=gpu, load_before=load_before)  # noqa: E731
    print(f"Table 6 on {dev_name}: cases {' '.join(cases)} -> {out}")
    labels = ([] if a.skip_ours else ["ours"]) + ([] if a.skip_nnunet else ["nnU-Net"])
    if a.resummarise:
        rows = {}
        for label in labels:
            res_dir = out / slug(label)
            rr, *_ = summarise_folder(res_dir, res_dir / slug(label), f"{label} on {dev_name}", spec.device,
                                      interval_s=a.interval)
            rows[label] = {case_id(r["Name"]): r for r in rr}
        write_table(out, rows, dev_name, a.nnunet_tta, device, meta())
        return 0

    write_table6_cases(a.work / "inputs", cases)
    model = paper_model((a.work / "model_paper").resolve())
    nn_model = with_default_resampling(model, a.work / "model_paper_nnunet_default_resampling")
    folds = model_folds(model)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + [q for q in os.environ.get("PYTHONPATH", "").split(os.pathsep) if q])}
    if device == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = str(a.gpu)  # as --gpus device=N does for a container
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env.setdefault(k, str(a.work / k))
    capped = [sys.executable, "-m", "benchmarks.flare.capped", "--gib", "24"]
    selected = find_cases(a.work / "inputs", cases)

    def ours(inp: Path, outp: Path) -> list[str]:
        head = capped + ["--module", "inference", "--"] if a.emulate_rtx3090 else [sys.executable, "-m", "inference"]
        return head + ["-i", str(inp), "-o", str(outp), "-m", str(model), "--device", device]

    def nnunet(inp: Path, outp: Path) -> list[str]:
        head = capped + ["--entry", NNUNET_ENTRY, "--"] if a.emulate_rtx3090 else None
        return nnunet_command(inp, outp, nn_model, folds, a.nnunet_tta, device, head)

    runs = ([] if a.skip_ours else [("ours", ours)]) + ([] if a.skip_nnunet else [("nnU-Net", nnunet)])
    rows: dict[str, dict[str, dict]] = {}
    for label, builder in runs:
        res_dir = out / slug(label)
        _, rr, _ = run_harness(selected, builder, res_dir, spec, slug(label), a.interval, env=env,
                               title=f"{label} on {dev_name}", keep_outputs=False,
                               samplers=SAMPLER_CHOICES[a.sampler])
        rows[label] = {case_id(r["Name"]): r for r in rr}
    write_table(out, rows, dev_name, a.nnunet_tta, device, meta())
    return 0


def write_table(out: Path, rows: dict[str, dict[str, dict]], dev_name: str, nnunet_tta: bool, device: str,
                meta: dict | None = None) -> None:
    """table6.md in `out` (atomically), with the note describing the run; also printed."""
    note = ("Harness: benchmarks.flare.harness in direct mode (no Docker: container start-up not included), "
            "memory sampled every 0.1 s (sampler timings: see the totals), numbers computed as the official "
            "load_json.py. Model: the paper's "
            "PlainConvUNet (30,713,158 parameters, random weights); nnU-Net ran "
            f"{'with' if nnunet_tta else 'without'} test-time mirroring, default (skimage) resampling. "
            "Volumes: MRI-like, the paper's sizes, spacings assumed (docs/flare.md section 6).")
    if device == "cpu":
        note += (" CPU run: only the cases listed (the paper's network is slow on a CPU); memory columns "
                 "are resident memory of the process tree, not GPU memory.")
    text = (metadata_markdown(meta) + "\n" if meta else "") + combined_table(rows, dev_name, note)
    write_text(out / "table6.md", text)
    print(text)
    print(f"wrote {out / 'table6.md'}")


if __name__ == "__main__":
    raise SystemExit(main())
