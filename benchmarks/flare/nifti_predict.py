"""The predictor with nibabel I/O, for a GPU machine without SimpleITK (benchmarks.flare.gpu_check's Table 6).

    python -m benchmarks.flare.nifti_predict -i INPUT_DIR -o OUTPUT_DIR [-m MODEL] [--device auto|cpu|cuda]
                                             [--gpu-memory-budget MIB] [--nibabel] [-q]

Where SimpleITK is installed each case goes through the predictor's own per-case function
(inference.api.segment_case). Without it (or with --nibabel) `segment_case_nibabel` does the same with
nibabel reading and writing: one case's stages (read, inference.api.segment_array with the image's
direction cosines, write), its warnings and its failure as an inference.api.CaseResult. Same model
loading, GPU-memory budget and out-of-memory fallbacks as `python -m inference`; single-channel models
only. Exit codes: 0 all written, 1 some case failed, 2 setup error.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flare.nifti_predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("-i", "--input", required=True, type=Path, help="folder with <case>_0000.nii.gz")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for <case>.nii.gz (created)")
    p.add_argument("-m", "--model", type=Path, default=None, help="model folder (default: weights/)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--gpu-memory-budget", type=float, default=4096, metavar="MIB",
                   help="as python -m inference (0: none)")
    p.add_argument("--nibabel", action="store_true", help="read and write with nibabel even where SimpleITK is installed")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-case lines")
    return p


def segment_case_nibabel(case, output_dir: Path, model, budget=None):
    """inference.api.segment_case with nibabel I/O: `<case>.nii.gz` in `output_dir`, failures returned."""
    from inference import InferenceError
    from inference.api import CaseResult, segment_array
    from inference.timings import StageTimer

    from .nifti_io import itk_direction, read_volume, write_labels
    timer = StageTimer(sync=_cuda_sync(model))
    image = case.channel_files[0]
    result = CaseResult(case=case.case_id, ok=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with timer.stage("read"):
                data, spacing, reference = read_volume(image)
            labels = segment_array(data, spacing, model, timer=timer, source=str(image), budget=budget,
                                   direction=itk_direction(reference))
            with timer.stage("write"):
                out_file = write_labels(labels, reference, output_dir / f"{case.case_id}.nii.gz")
        result.warnings = [str(w.message) for w in caught]
        result.ok, result.output = True, out_file
    except InferenceError as e:
        result.error = str(e)
    except (RuntimeError, OSError, ValueError, MemoryError) as e:
        result.error = f"{image}: {type(e).__name__}: {e}"
    result.timings = dict(timer.seconds)
    return result


def _cuda_sync(model):
    if model.device.type != "cuda":
        return None
    import torch
    return torch.cuda.synchronize


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    p = build_parser()
    a = p.parse_args(argv)

    from inference import InferenceError
    from inference.api import DEFAULT_MODEL_DIR, check_folders, segment_case
    from inference.device import resolve_device
    from inference.files.cases import find_cases
    from inference.memory.gpu_budget import GpuBudget
    from inference.loading import load_model

    from .nifti_io import simpleitk_importable
    try:
        check_folders(a.input, a.output)
        device = resolve_device(a.device)
        model = load_model(a.model or DEFAULT_MODEL_DIR, device=device)
        if model.num_input_files != 1:
            raise InferenceError(f"{model.model_dir}: {model.num_input_files} input files per case; "
                                 f"this reader handles single-channel models only")
        cases, skipped = find_cases(a.input, 1, model.file_ending)
    except InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for message in skipped:
        print(f"warning: {message}", file=sys.stderr)
    nibabel = a.nibabel or not simpleitk_importable()
    budget = GpuBudget(a.gpu_memory_budget or None, device)
    failed = 0
    for case in cases:
        result = (segment_case_nibabel(case, a.output, model, budget) if nibabel
                  else segment_case(case, a.output, model, budget=budget))
        for message in result.warnings:
            print(f"warning: {message}", file=sys.stderr)
        if not result.ok:
            failed += 1
            print(f"{result.case}: FAILED: {result.error}", file=sys.stderr, flush=True)
        elif not a.quiet:
            stages = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())
            print(f"{result.case}: ok -> {result.output} [{stages}]", flush=True)
    if not a.quiet:
        print(f"{len(cases)} case(s) on {device} with {'nibabel' if nibabel else 'SimpleITK'} I/O in "
              f"{time.perf_counter() - started:.2f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
