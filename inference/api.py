"""Python entry points: segment an array, one case, or a whole folder with a loaded or a named model.

`segment_folder` is the one per-folder loop of the repository: `python -m inference` and
`labeltransfer pseudolabel` are thin shells over it.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from inference import InferenceError
from inference.memory.gpu_plan import FLARE_BUDGET_MIB, FP16
from inference.model.loading import DEFAULT_CHECKPOINT, LoadedModel, build_network, load_model
from inference.timings import StageTimer

if TYPE_CHECKING:  # inference.files needs SimpleITK; segment_array does not (the GPU check reads with nibabel)
    import torch

    from inference.memory.gpu_budget import GpuBudget
    from inference.files.cases import Case

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights"
# The torch path's stage functions, attributes of this module imported on first use (PEP 562 __getattr__
# below): importing them loads torch, which the OpenVINO path never needs. Tests replace them here.
_TORCH_STAGES = {"preprocess": "inference.engines.torch_engine.preprocess", "predict_logits": "inference.engines.torch_engine.sliding_window",
                 "logits_to_segmentation": "inference.engines.torch_engine.export"}
_this = sys.modules[__name__]


def __getattr__(name: str):
    if name in _TORCH_STAGES:
        value = getattr(importlib.import_module(_TORCH_STAGES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class CaseResult:
    """What became of one case: output file or error, warnings, seconds per stage."""
    case: str
    ok: bool
    output: Path | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    disk_full: bool = False      # the output could not be written: its disk is full (the folder run stops)


def _network_options(**wanted) -> dict:
    """The given options (tile batch, autocast and logits dtypes) that `predict_logits` accepts, None values
    dropped: tests wrap it with other signatures, and an option it does not take is never passed."""
    accepted = inspect.signature(_this.predict_logits).parameters
    return {k: v for k, v in wanted.items() if k in accepted and v is not None}


def _on_cpu(model: LoadedModel) -> list[torch.nn.Module]:
    """The model's networks on the CPU, built from the plans and a host copy of the weights (never a
    device-side copy: the device has just run out of memory)."""
    if model.device.type == "cpu":
        return model.networks
    cached = vars(model).get("_cpu_networks")   # kept on the model: built once, gone with it
    if cached is None:
        cached = []
        for network in model.networks:
            cpu_net = build_network(model.config.architecture, model.num_channels, model.num_classes)
            cpu_net.load_state_dict({k: v.cpu() for k, v in network.state_dict().items()})
            cached.append(cpu_net.eval())
        vars(model)["_cpu_networks"] = cached
    return cached


def segment_array(image: np.ndarray, spacing: tuple[float, ...], model: LoadedModel, *,
                  tta: bool = False, step_size: float = 0.5, timer: StageTimer | None = None,
                  progress: Callable[[int, int], None] | None = None, source: str = "image",
                  budget: GpuBudget | None = None, direction: tuple[float, ...] | None = None) -> np.ndarray:
    """Label map (Z, Y, X) uint8 for an image (C, Z, Y, X) with spacing (z, y, x) in mm.

    `source` names the image in warnings (e.g. its file). A model with a localiser runs it first and
    itself only inside the organs' box (inference/roi.py); `direction` (the image's SimpleITK direction
    cosines; None: axial, the first array axis is cranio-caudal) tells it which axis it keeps whole. On CUDA, `budget` plans the tile batch, the
    logits dtype and the export chunking of this case (inference.memory.gpu_plan). A CUDA out-of-memory error
    in any stage is not fatal: the stage is redone with less memory, then on the CPU (inference.engines.torch_engine.oom).
    """
    if model.plan.backend == "openvino":   # numpy and OpenVINO, without torch (inference.engines.numpy_engine.pipeline)
        from inference.engines.numpy_engine import pipeline as host
        return host.segment_array(image, spacing, model, tta=tta, step_size=step_size, timer=timer,
                                  progress=progress, source=source, direction=direction)
    import torch

    from inference.engines.torch_engine.oom import run_with_fallback
    preprocess, predict_logits, logits_to_segmentation = \
        _this.preprocess, _this.predict_logits, _this.logits_to_segmentation   # see __getattr__
    cpu = torch.device("cpu")
    timer = timer or StageTimer()
    if model.localizer is not None:   # ROI-first: localise, then this function on the box only
        from inference.roi import segment_with_roi
        return segment_with_roi(image, model, lambda img, m: segment_array(
            img, spacing, m, tta=tta, step_size=step_size, timer=timer, progress=progress, source=source,
            budget=budget), timer, spacing=spacing, direction=direction)
    cuda = model.device.type == "cuda"
    if cuda and budget is not None and budget.active:
        budget.prepare(model)   # once per model: measures the context and caps the allocator before any stage
    with timer.stage("preprocess"):
        prep = run_with_fallback("preprocess", [
            ("the planned settings", lambda: preprocess(image, spacing, model, source)),
            ("the cache emptied", lambda: preprocess(image, spacing, model, source)),
            ("the CPU", lambda: preprocess(image, spacing, replace(model, device=cpu), source)),
        ], source)
    plan = budget.plan(model, image.shape[1:], prep.shape_after_cropping, prep.data.shape[1:]) \
        if cuda and budget is not None and budget.active else None
    mirror = model.mirror_axes if tta else None

    def network(device: torch.device, networks, **options) -> torch.Tensor:
        data = prep.data.to(device)
        return predict_logits(data, networks, model.num_classes, model.config.patch_size, step_size, mirror,
                              progress, **_network_options(**options))

    with timer.stage("network"):
        torch_autocast = model.plan.autocast_dtype if model.plan.backend == "torch" else None
        planned = {"batch_size": model.plan.batch_size, "autocast_dtype": torch_autocast}
        if plan is not None:   # the GPU budget's choices (inference.memory.gpu_plan)
            planned.update(batch_size=plan.tile_batch,
                           logits_dtype=torch.float16 if plan.logits_dtype_bytes == FP16 else torch.float32)
        smaller = {"batch_size": 1, "autocast_dtype": torch_autocast,
                   "logits_dtype": torch.float16 if cuda else None}
        how = ", ".join(f"{k} {v}" for k, v in _network_options(**smaller).items() if k != "autocast_dtype") \
            or "the cache emptied"
        logits = run_with_fallback("network", [
            ("the planned settings", lambda: network(model.device, model.networks, **planned)),
            (how, lambda: network(model.device, model.networks, **smaller)),
            ("the CPU", lambda: network(cpu, _on_cpu(model), autocast_dtype=None)),
        ], source)
        prep = replace(prep, data=None)  # the network input is no longer needed
    with timer.stage("export"):
        chunk = None if plan is None else plan.classes_per_chunk
        labels = run_with_fallback("export", [
            ("the planned settings", lambda: logits_to_segmentation(logits, prep, model, chunk)),
            ("one class per chunk", lambda: logits_to_segmentation(logits, prep, model, 1)),
            ("the CPU", lambda: logits_to_segmentation(logits.cpu(), prep, model)),
        ], source)
    return labels


def segment_case(case: Case, output_dir: Path, model: LoadedModel, *, tta: bool = False,
                 step_size: float = 0.5, progress: Callable[[int, int], None] | None = None,
                 budget: GpuBudget | None = None) -> CaseResult:
    """Segment one case into `output_dir/<case>.nii.gz`; failures come back as a result, not raised."""
    from inference.files.atomic import DiskFullError
    from inference.files.reading import describe_failure, read_case
    from inference.files.writing import write_segmentation
    cuda = model.device.type == "cuda"
    if cuda:
        import torch
    sync = torch.cuda.synchronize if cuda else None
    timer = StageTimer(sync=sync)
    result = CaseResult(case=case.case_id, ok=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with timer.stage("read"):
                volume = read_case(case, model)
            labels = segment_array(volume.data, volume.spacing, model, tta=tta, step_size=step_size,
                                   timer=timer, progress=progress, source=str(case.channel_files[0]),
                                   budget=budget, direction=volume.reference.GetDirection())
            with timer.stage("write"):
                out_file = output_dir / f"{case.case_id}.nii.gz"
                write_segmentation(labels, volume.reference, out_file)
        result.warnings = [str(w.message) for w in caught]
        result.ok, result.output = True, out_file
    except DiskFullError as e:
        result.error, result.disk_full = str(e), True
    except InferenceError as e:
        result.error = str(e)
    except Exception as e:  # noqa: BLE001  one case never ends the run; worded without Python's type names
        result.error = describe_failure(case.channel_files[0], e)
    finally:
        if cuda:
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


def check_folders(input_dir: Path, output_dir: Path) -> None:
    """Folder-level checks before any work: the input folder exists, the output folder is usable.

    Cheap; callers that want to fail before loading a model (the CLI) call it first themselves.
    """
    if not input_dir.is_dir():
        raise InferenceError(f"{input_dir}: input folder not found")
    check_output_dir(output_dir)


def segment_folder(input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                   model_dir: str | os.PathLike = DEFAULT_MODEL_DIR, folds: list[str] | None = None,
                   checkpoint: str = DEFAULT_CHECKPOINT, device: str = "auto", tta: bool = False,
                   step_size: float = 0.5, configuration: str | None = None,
                   model: LoadedModel | None = None, cases: list[Case] | None = None,
                   backend: str = "auto", precision: str = "auto", batch_size: int | None = None,
                   on_result: Callable[[CaseResult], None] | None = None,
                   on_skipped: Callable[[str], None] | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   gpu_memory_budget_mib: float | None = FLARE_BUDGET_MIB) -> list[CaseResult]:
    """Segment every `<case>_0000` image of `input_dir` (or only `cases`) into `output_dir/<case>.nii.gz`.

    model: an already loaded model (then model_dir, folds, checkpoint, device and configuration are
    not used); otherwise the model folder is loaded once here. cases: the cases to do, e.g. one shard
    of a folder; default: every case found in `input_dir`. on_result is called after each case;
    on_skipped with the message for each file in `input_dir` that is not an input (default: a warning).

    On CUDA the whole device's memory is kept within `gpu_memory_budget_mib` where the case allows
    (None: no budget); see inference.memory.gpu_plan.

    Folder-level problems (missing input folder, unusable model, unwritable output) raise
    InferenceError; a bad case gives a failed CaseResult and the others still run, except after an output
    that could not be written for lack of disk space: then every later case gets a failed CaseResult
    ("not attempted") without being run. `backend`,
    `precision` and `batch_size` are load_model's (ignored when `model` is given).
    """
    from inference.files.cases import find_cases
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_folders(input_dir, output_dir)
    if model is None:
        model = load_model(model_dir, folds, checkpoint, device, configuration,
                           backend=backend, precision=precision, batch_size=batch_size)
    if cases is None:
        cases, skipped = find_cases(input_dir, model.num_input_files, model.file_ending)
        for message in skipped:
            if on_skipped:
                on_skipped(message)
            else:
                warnings.warn(message, stacklevel=2)
    budget = None
    if model.device.type == "cuda":   # the budget module needs torch; the CPU paths need no budget
        from inference.memory.gpu_budget import GpuBudget
        budget = GpuBudget(gpu_memory_budget_mib, model.device)
    results = []
    for index, case in enumerate(cases):
        result = segment_case(case, output_dir, model, tta=tta, step_size=step_size, progress=progress,
                              budget=budget)
        results.append(result)
        if on_result:
            on_result(result)
        if result.disk_full:   # the next cases would fail too: stop, naming each case not attempted
            for rest in cases[index + 1:]:
                results.append(CaseResult(rest.case_id, ok=False, error=(
                    f"{rest.channel_files[0]}: not attempted: the output folder {output_dir} is on a full disk "
                    f"(writing {case.case_id} failed); free space and rerun")))
                if on_result:
                    on_result(results[-1])
            break
    return results
