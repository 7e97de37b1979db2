"""Python entry points: segment one case or a whole folder with a loaded or a named model."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from inference import InferenceError
from inference.export import logits_to_segmentation
from inference.io import Case, find_cases, read_case, write_segmentation
from inference.model import DEFAULT_CHECKPOINT, LoadedModel, load_model
from inference.preprocess import preprocess
from inference.sliding_window import predict_logits
from inference.timings import StageTimer

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass
class CaseResult:
    case: str
    ok: bool
    output: Path | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError("--device cuda asked for, but no CUDA device is available")
    return device


def segment_array(image: np.ndarray, spacing: tuple[float, ...], model: LoadedModel, *,
                  tta: bool = False, step_size: float = 0.5, timer: StageTimer | None = None,
                  progress: Callable[[int, int], None] | None = None, source: str = "image") -> np.ndarray:
    """Label map (Z, Y, X) uint8 for an image (C, Z, Y, X) with spacing (z, y, x) in mm.

    `source` names the image in warnings (e.g. its file).
    """
    timer = timer or StageTimer()
    with timer.stage("preprocess"):
        prep = preprocess(image, spacing, model, source)
    with timer.stage("network"):
        logits = predict_logits(prep.data, model.networks, model.num_classes, model.config.patch_size,
                                step_size, model.mirror_axes if tta else None, progress,
                                batch_size=model.plan.batch_size,
                                autocast_dtype=model.plan.autocast_dtype if model.plan.backend == "torch" else None)
        del prep.data
    with timer.stage("export"):
        labels = logits_to_segmentation(logits, prep, model)
    return labels


def segment_case(case: Case, output_dir: Path, model: LoadedModel, *, tta: bool = False,
                 step_size: float = 0.5, progress: Callable[[int, int], None] | None = None) -> CaseResult:
    """Segment one case into `output_dir/<case>.nii.gz`; failures come back as a result, not raised."""
    sync = torch.cuda.synchronize if model.device.type == "cuda" else None
    timer = StageTimer(sync=sync)
    result = CaseResult(case=case.case_id, ok=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with timer.stage("read"):
                volume = read_case(case)
            labels = segment_array(volume.data, volume.spacing, model, tta=tta, step_size=step_size,
                                   timer=timer, progress=progress, source=str(case.channel_files[0]))
            with timer.stage("write"):
                out_file = output_dir / f"{case.case_id}.nii.gz"
                write_segmentation(labels, volume.reference, out_file)
        result.warnings = [str(w.message) for w in caught]
        result.ok, result.output = True, out_file
    except InferenceError as e:
        result.error = str(e)
    except (RuntimeError, OSError, ValueError, MemoryError) as e:
        result.error = f"{case.channel_files[0]}: {type(e).__name__}: {e}"
    finally:
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
    result.timings = dict(timer.seconds)
    return result


def check_output_dir(output_dir: Path) -> None:
    """Create the output folder if needed; refuse one we cannot write to before any work is done."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InferenceError(f"{output_dir}: cannot create output folder ({e.strerror})") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise InferenceError(f"{output_dir}: output folder is not writable")


def segment_folder(input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                   model_dir: str | os.PathLike = DEFAULT_MODEL_DIR, folds: list[str] | None = None,
                   checkpoint: str = DEFAULT_CHECKPOINT, device: str = "auto", tta: bool = False,
                   step_size: float = 0.5, model: LoadedModel | None = None, backend: str = "auto",
                   precision: str = "auto", batch_size: int | None = None,
                   on_result: Callable[[CaseResult], None] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[CaseResult]:
    """Segment every `<case>_0000` image of `input_dir` into `output_dir`.

    Folder-level problems (missing input folder, unusable model, unwritable output) raise
    InferenceError; a bad case gives a failed CaseResult and the others still run. `backend`,
    `precision` and `batch_size` are load_model's (ignored when `model` is given).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise InferenceError(f"{input_dir}: input folder not found")
    check_output_dir(output_dir)
    if model is None:
        model = load_model(model_dir, folds, checkpoint, resolve_device(device), backend=backend,
                           precision=precision, batch_size=batch_size)
    cases, skipped = find_cases(input_dir, model.num_input_files, model.file_ending)
    for message in skipped:
        warnings.warn(message, stacklevel=2)
    results = []
    for case in cases:
        result = segment_case(case, output_dir, model, tta=tta, step_size=step_size, progress=progress)
        results.append(result)
        if on_result:
            on_result(result)
    return results
