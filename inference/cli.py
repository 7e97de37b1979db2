"""Command line: `python -m inference -i INPUT_DIR -o OUTPUT_DIR [-m MODEL_DIR] ...`.

A thin shell over `inference.api.segment_folder`: parse, load the model (timed), run, report, write timings.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from inference import InferenceError


def build_parser() -> argparse.ArgumentParser:
    from inference.model.folder import DEFAULT_CHECKPOINT
    parser = argparse.ArgumentParser(
        prog="python -m inference",
        description="Segment every <case>_0000.nii.gz in INPUT_DIR with an nnU-Net v2 model folder and write "
                    "<case>.nii.gz to OUTPUT_DIR (no test-time augmentation unless --tta; argmax on logits; "
                    "nnU-Net's resampling rules, in numpy on the CPU and in torch on CUDA).")
    parser.add_argument("-i", "--input", required=True, type=Path, help="folder with <case>_0000.nii.gz files")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for <case>.nii.gz (created)")
    parser.add_argument("-m", "--model", type=Path, default=None,
                        help="nnU-Net trained-model folder (default: weights/ beside this package)")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to use, e.g. 0 1 2 or all (default: every fold_* with the checkpoint); "
                             "several folds are ensembled by averaging logits")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint file name in each fold")
    parser.add_argument("--configuration", default=None,
                        help="plans configuration (default: the one named in the checkpoint)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="compute device (auto: cuda when available)")
    parser.add_argument("--backend", choices=("auto", "torch", "openvino"), default="auto",
                        help="network engine (auto: OpenVINO on the CPU when the model folder has its IR and "
                             "openvino is installed, else torch; CUDA is always torch)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help="network precision (auto: bf16 on a CPU with native bfloat16 (avx512_bf16 or amx_bf16), "
                             "fp32 on other CPUs, fp16 autocast on CUDA; fp32 is exact; fp16 is CUDA only). "
                             "Logits always sum in fp32")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="tiles per network call (default: a rule measured per backend and device)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time mirroring over the axes the checkpoint allows (slower)")
    parser.add_argument("--step-size", type=float, default=0.5,
                        help="sliding-window step as a fraction of the patch (0 < s <= 1; default 0.5)")
    parser.add_argument("--no-roi", action="store_true",
                        help="ignore the model's localizer/ (if any) and run the model on the whole image "
                             "(see docs/roi.md)")
    parser.add_argument("--roi-grid", choices=("whole", "box"), default="whole",
                        help="the tiles the model runs for the localizer's box: whole = the whole image's tiles "
                             "that meet it (labels inside the box equal --no-roi's); box = a tile grid laid over "
                             "the box only (fewer tiles on large fields, labels may differ; see docs/roi.md)")
    parser.add_argument("--timings", type=Path, default=None, help="write per-stage seconds as JSON here")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no per-case progress lines (failures and warnings are still printed)")
    parser.add_argument("--gpu-memory-budget", type=float, default=4096, metavar="MIB",
                        help="keep the whole GPU's memory (CUDA context included) within MIB where the case "
                             "allows: steers tile batch, logits dtype, export chunking and the allocator cap "
                             "(default 4096, FLARE's tolerance; 0: no budget). See docs/gpu_memory.md")
    return parser


def _progress_bar():
    """A tile progress bar on a terminal, None otherwise (logs stay clean)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if done == 1:
            bar = tqdm(total=total, desc="tiles", leave=False, file=sys.stderr)
        bar.update(1)
        if done == total:
            bar.close()
    return update


def _usage_error(args) -> str | None:
    if not 0 < args.step_size <= 1:
        return f"--step-size must be in (0, 1], got {args.step_size}"
    if args.gpu_memory_budget < 0:
        return f"--gpu-memory-budget must be >= 0 MiB, got {args.gpu_memory_budget}"
    return None


def _load(args):
    """The model the arguments name (after the cheap folder checks: a usage error costs nothing)."""
    from inference.api import ModelSpec, check_folders
    check_folders(args.input, args.output)
    spec = ModelSpec(args.model or ModelSpec.model_dir, tuple(args.folds) if args.folds else None, args.checkpoint,
                     args.device, args.configuration, args.backend, args.precision, args.batch_size,
                     roi=not args.no_roi)
    return spec.load()


def _reporter(quiet: bool):
    def report(result) -> None:
        for message in result.warnings:
            print(f"warning: {message}", file=sys.stderr)
        if not result.ok:
            print(f"{result.case}: FAILED: {result.error}", file=sys.stderr, flush=True)
        elif not quiet:
            stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
            print(f"{result.case}: ok -> {result.output} [{stages}]", flush=True)
    return report


def _write_timings(path: Path, model, startup: dict, results, started_at: float) -> None:
    from inference.files.atomic import write_json
    records = [{"case": r.case, "ok": r.ok, "error": r.error,
                "seconds": {k: round(v, 4) for k, v in r.timings.items()}} for r in results]
    write_json(path, {"device": str(model.device), "model": str(model.model_dir), "network": model.plan.describe(),
                      "startup": startup, "cases": records,
                      "total_seconds": round(time.perf_counter() - started_at, 4)})


def main(argv: list[str] | None = None, started_at: float | None = None, model=None) -> int:
    """The command line; `model`: an already loaded model to use instead of loading the one named."""
    started_at = time.perf_counter() if started_at is None else started_at
    args = build_parser().parse_args(argv)
    problem = _usage_error(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from inference.api import segment_folder
    from inference.roi import RoiSettings
    imports_done = time.perf_counter()
    startup = {"imports": round(imports_done - started_at, 4)}
    try:
        model = model or _load(args)
    except InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    startup["model_load"] = round(time.perf_counter() - imports_done, 4)
    # The first line says which precision runs and why (auto differs between CPUs: inference.engines.choice).
    print(f"precision {model.plan.precision} ({model.plan.reason}); "
          f"model {model.model_dir} (configuration {model.config.name}, folds {' '.join(model.folds)}) on "
          f"{model.device} ({model.plan.describe()}); "
          f"start-up: imports {startup['imports']:.2f}s, model load {startup['model_load']:.2f}s", flush=True)
    try:
        results = segment_folder(args.input, args.output, model, tta=args.tta, step_size=args.step_size,
                                 on_result=_reporter(args.quiet), progress=None if args.quiet else _progress_bar(),
                                 on_skipped=lambda message: print(f"warning: {message}", file=sys.stderr),
                                 gpu_memory_budget_mib=args.gpu_memory_budget or None,
                                 roi_settings=RoiSettings(grid=args.roi_grid))
    except InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not results:
        print(f"no <case>_0000{model.file_ending} files in {args.input}: nothing to do", flush=True)
    if args.timings:
        try:
            _write_timings(args.timings, model, startup, results, started_at)
        except InferenceError as e:   # the segmentations are written; say the timings are not
            print(f"error: {e}", file=sys.stderr)
            return 1
    return _exit_code(results, args.output)


def _exit_code(results, output_dir: Path) -> int:
    """0 when every case was written; else 1, after a summary (and why the run stopped early, if it did)."""
    failed = sum(not r.ok for r in results)
    full = next((r for r in results if r.disk_full), None)
    if full is not None:
        not_attempted = len(results) - results.index(full) - 1
        print(f"stopped early: the output folder {output_dir} is on a full disk (writing {full.case} failed); "
              f"{not_attempted} case(s) not attempted; free space and rerun: finished cases are kept",
              file=sys.stderr)
    if failed:
        print(f"{failed} of {len(results)} case(s) failed", file=sys.stderr)
        return 1
    return 0
