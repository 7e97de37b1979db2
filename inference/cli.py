"""Command line: `python -m inference -i INPUT_DIR -o OUTPUT_DIR [-m MODEL_DIR] ...`. Parses and reports only."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from inference import InferenceError


def build_parser() -> argparse.ArgumentParser:
    from inference.model import DEFAULT_CHECKPOINT
    parser = argparse.ArgumentParser(
        prog="python -m inference",
        description="Segment every <case>_0000.nii.gz in INPUT_DIR with an nnU-Net v2 model folder and write "
                    "<case>.nii.gz to OUTPUT_DIR (no test-time augmentation unless --tta; argmax on logits; "
                    "torch resampling on the compute device).")
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
                        help="network precision (auto: fp32 on the CPU, fp16 autocast on CUDA; bf16 needs a "
                             "CPU with native bfloat16; fp16 is CUDA only). Logits always sum in fp32")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="tiles per network call (default: a rule measured per backend and device)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time mirroring over the axes the checkpoint allows (slower)")
    parser.add_argument("--step-size", type=float, default=0.5,
                        help="sliding-window step as a fraction of the patch (0 < s <= 1; default 0.5)")
    parser.add_argument("--timings", type=Path, default=None, help="write per-stage seconds as JSON here")
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


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def main(argv: list[str] | None = None, started_at: float | None = None) -> int:
    started_at = time.perf_counter() if started_at is None else started_at
    args = build_parser().parse_args(argv)
    if not 0 < args.step_size <= 1:
        print(f"error: --step-size must be in (0, 1], got {args.step_size}", file=sys.stderr)
        return 2

    from inference.api import DEFAULT_MODEL_DIR, check_output_dir, resolve_device, segment_case
    from inference.io import find_cases
    from inference.model import load_model
    imports_done = time.perf_counter()
    startup = {"imports": round(imports_done - started_at, 4)}
    model_dir = args.model or DEFAULT_MODEL_DIR
    try:
        if not args.input.is_dir():
            raise InferenceError(f"{args.input}: input folder not found")
        check_output_dir(args.output)
        device = resolve_device(args.device)
        model = load_model(model_dir, args.folds, args.checkpoint, device, args.configuration,
                           backend=args.backend, precision=args.precision, batch_size=args.batch_size)
        startup["model_load"] = round(time.perf_counter() - imports_done, 4)
        cases, skipped = find_cases(args.input, model.num_input_files, model.file_ending)
    except InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for message in skipped:
        print(f"warning: {message}", file=sys.stderr)
    print(f"model {model_dir} (configuration {model.config.name}, folds {' '.join(model.folds)}) on {device} "
          f"({model.plan.describe()}); start-up: imports {startup['imports']:.2f}s, "
          f"model load {startup['model_load']:.2f}s", flush=True)
    if not cases:
        print(f"no <case>_0000{model.file_ending} files in {args.input}: nothing to do", flush=True)

    progress = _progress_bar()
    records, failed = [], 0
    for case in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # segment_case records them; printed below once
            result = segment_case(case, args.output, model, tta=args.tta, step_size=args.step_size,
                                  progress=progress)
        for message in result.warnings:
            print(f"warning: {message}", file=sys.stderr)
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
        if result.ok:
            print(f"{case.case_id}: ok -> {result.output} [{stages}]", flush=True)
        else:
            failed += 1
            print(f"{case.case_id}: FAILED: {result.error}", file=sys.stderr, flush=True)
        records.append({"case": result.case, "ok": result.ok, "error": result.error,
                        "seconds": {k: round(v, 4) for k, v in result.timings.items()}})

    if args.timings:
        _write_json_atomic(args.timings, {"device": str(device), "model": str(model_dir),
                                          "network": model.plan.describe(),
                                          "startup": startup, "cases": records,
                                          "total_seconds": round(time.perf_counter() - started_at, 4)})
    if failed:
        print(f"{failed} of {len(cases)} case(s) failed", file=sys.stderr)
        return 1
    return 0
