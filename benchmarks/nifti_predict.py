"""The predictor with nibabel I/O, for a GPU machine without SimpleITK (benchmarks.gpu_check's Table 6).

    python -m benchmarks.nifti_predict -i INPUT_DIR -o OUTPUT_DIR [-m MODEL] [--device auto|cpu|cuda]
                                       [--gpu-memory-budget MIB] [-q]

Same model loading, preprocessing, network, export, GPU-memory budget and out-of-memory fallbacks as
`python -m inference` (inference.api.segment_array); only reading and writing differ (benchmarks.nifti_io).
Single-channel models only. Exit codes: 0 all written, 1 some case failed, 2 setup error.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nifti_predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("-i", "--input", required=True, type=Path, help="folder with <case>_0000.nii.gz")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for <case>.nii.gz (created)")
    p.add_argument("-m", "--model", type=Path, default=None, help="model folder (default: weights/)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--gpu-memory-budget", type=float, default=4096, metavar="MIB",
                   help="as python -m inference (0: none)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-case lines")
    return p


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    p = build_parser()
    a = p.parse_args(argv)

    from inference import InferenceError
    from inference.api import DEFAULT_MODEL_DIR, check_output_dir, segment_array
    from inference.device import resolve_device
    from inference.memory.gpu_budget import GpuBudget
    from inference.loading import load_model
    from inference.timings import StageTimer

    from .nifti_io import read_volume, write_labels
    try:
        if not a.input.is_dir():
            raise InferenceError(f"{a.input}: input folder not found")
        check_output_dir(a.output)
        device = resolve_device(a.device)
        model = load_model(a.model or DEFAULT_MODEL_DIR, device=device)
        if model.num_input_files != 1:
            raise InferenceError(f"{model.model_dir}: {model.num_input_files} input files per case; "
                                 f"this reader handles single-channel models only")
    except InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    budget = GpuBudget(a.gpu_memory_budget or None, device)
    suffix = "_0000" + model.file_ending
    failed = 0
    cases = sorted(f for f in a.input.iterdir() if f.name.endswith(suffix))
    for image in cases:
        case = image.name[: -len(suffix)]
        timer = StageTimer()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with timer.stage("read"):
                    data, spacing, ref = read_volume(image)
                labels = segment_array(data, spacing, model, timer=timer, source=str(image), budget=budget)
                with timer.stage("write"):
                    write_labels(labels, ref, a.output / f"{case}.nii.gz")
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
            if not a.quiet:
                print(f"{case}: ok [{timer.line()}]", flush=True)
        except (InferenceError, RuntimeError, OSError, ValueError, MemoryError) as e:
            failed += 1
            print(f"{case}: FAILED: {image}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    if not a.quiet:
        print(f"{len(cases)} case(s) on {device} in {time.perf_counter() - started:.2f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
