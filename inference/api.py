"""The pipeline, written once: read -> (localise) -> preprocess -> network -> export -> write.

Python entry points: `segment_array` (an array), `segment_case` (one case's files) and `segment_folder`
(the one per-folder loop of the repository: `python -m inference` and `labeltransfer pseudolabel` are thin
shells over it), and `load_model`. The array stages run on the engine the loaded model carries
(inference.engines.base); the ROI step (inference.roi) sits above them.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from inference import InferenceError
from inference.engines.base import Progress, Window
from inference.memory.cost import check_case
from inference.memory.gpu_plan import FLARE_BUDGET_MIB
from inference.model.folder import DEFAULT_MODEL_DIR
from inference.loading import LoadedModel, ModelSpec, load_model
from inference.roi import RoiSettings, box_could_spare_tiles, decide_box
from inference.rules.region import Region, network_region
from inference.rules.tiling import tiles_meeting
from inference.timings import StageTimer

if TYPE_CHECKING:  # inference.files needs SimpleITK; segment_array does not (the GPU check reads with nibabel)
    from inference.files.cases import Case

__all__ = ["CaseResult", "DEFAULT_MODEL_DIR", "ModelSpec", "check_folders", "load_model", "segment_array",
           "segment_case", "segment_folder"]


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


def segment_array(image: np.ndarray, spacing: tuple[float, ...], model: LoadedModel, *,
                  tta: bool = False, step_size: float = 0.5, timer: StageTimer | None = None,
                  progress: Progress | None = None, source: str = "image", budget=None,
                  direction: tuple[float, ...] | None = None, roi_settings: RoiSettings = RoiSettings()) -> np.ndarray:
    """Label map (Z, Y, X) uint8 for an image (C, Z, Y, X) with spacing (z, y, x) in mm.

    `source` names the image in messages (e.g. its file). A model with a localiser runs it first, then
    itself only on the tiles that meet the organs' box, with background outside it (inference.roi),
    unless no box could spare a tile (roi.box_could_spare_tiles): then the whole image runs without it;
    `direction` (the image's SimpleITK direction cosines; None: axial, the first array axis is
    cranio-caudal) tells it which axis it keeps whole.
    `roi_settings`: the localiser's margin and fall-back thresholds. `budget`: the torch engine's CUDA
    memory budget (segment_folder makes one).
    """
    timer = timer or StageTimer(sync=model.engine.synchronize)
    window = Window(step_size, model.mirror_axes if tta else None, progress)
    if model.localizer is None:
        return _segment(image, spacing, model, window, timer, source, budget)
    plain = replace(model, localizer=None)
    if roi_settings.grid == "whole" and not box_could_spare_tiles(image, spacing, model, direction):
        return _segment(image, spacing, plain, window, timer, source, budget)   # the localiser would save nothing
    shared: dict = {}     # the localiser and the model crop and normalise the image once when they can
    with timer.stage("localize"):
        decision = decide_box(image, spacing, model, roi_settings, direction, source, shared)
    return _segment(image, spacing, plain, window, timer, source, budget, decision.box, roi_settings.grid, shared)


def _segment(image: np.ndarray, spacing, model: LoadedModel, window: Window, timer: StageTimer,
             source: str, budget, box: tuple[slice, ...] | None = None, grid: str = "whole",
             shared: dict | None = None) -> np.ndarray:
    """The three array stages on the model's engine, each timed. With a `box` (slices (Z, Y, X) of the
    image) the whole image is preprocessed as without one, but the network runs only the tiles of `grid`
    for the box (inference.rules.tiling.tile_plan) and only the box is exported (inference.rules.region);
    outside it all is background."""
    engine = model.engine
    with timer.stage("preprocess"):
        prep = engine.preprocess(image, spacing, model, source, budget, shared=shared)
        if shared:
            shared.clear()    # the shared crop is not needed past preprocessing: free it
    region = None
    if box is not None:
        region = network_region(box, model.transpose_forward, prep.bbox, tuple(prep.data.shape[1:]), grid)
        if region is None:   # the box misses the nonzero crop, which the whole image labels 0
            return np.zeros(tuple(image.shape[1:]), dtype=np.uint8 if model.num_classes <= 256 else np.int16)
        if not _saves_tiles(region, model, window):
            region = None    # the whole image costs the same: run it, then keep the box (below)
    with timer.stage("network"):
        logits = engine.predict_logits(prep, model, window, source, budget, region=region)
        prep = replace(prep, data=None)  # the network input is no longer needed
    with timer.stage("export"):
        labels = engine.export(logits, prep, model, source, budget, region=region)
        if box is not None and region is None:
            labels = _inside(labels, box)
        return labels


def _inside(labels: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """The labels inside `box`, background elsewhere: what the localiser found is all the ROI keeps,
    whether or not it saved tiles (labels outside the organs' box are false positives)."""
    kept = np.zeros_like(labels)
    kept[box] = labels[box]
    return kept


def _saves_tiles(region: Region, model: LoadedModel, window: Window) -> bool:
    """Whether the tiles run for the region are fewer than the whole image's."""
    shape, patch, step = region.network_shape, model.config.patch_size, window.step_size
    return tiles_meeting(shape, patch, step, region.network, region.grid) < tiles_meeting(shape, patch, step)


def segment_case(case: Case, output_dir: Path, model: LoadedModel, *, tta: bool = False,
                 step_size: float = 0.5, progress: Progress | None = None, budget=None,
                 roi_settings: RoiSettings = RoiSettings()) -> CaseResult:
    """Segment one case into `output_dir/<case>.nii.gz`; failures come back as a result, not raised."""
    from inference.files.atomic import DiskFullError
    from inference.files.reading import describe_failure, read_case
    from inference.files.writing import write_segmentation
    timer = StageTimer(sync=model.engine.synchronize)
    result = CaseResult(case=case.case_id, ok=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with timer.stage("read"):
                volume = read_case(case, partial(check_case, model=model))
            labels = segment_array(volume.data, volume.spacing, model, tta=tta, step_size=step_size,
                                   timer=timer, progress=progress, source=str(case.channel_files[0]),
                                   budget=budget, direction=volume.reference.GetDirection(),
                                   roi_settings=roi_settings)
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
        model.engine.release()
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
                   model: LoadedModel | ModelSpec | str | os.PathLike = DEFAULT_MODEL_DIR, *,
                   cases: list[Case] | None = None, tta: bool = False, step_size: float = 0.5,
                   on_result: Callable[[CaseResult], None] | None = None,
                   on_skipped: Callable[[str], None] | None = None, progress: Progress | None = None,
                   gpu_memory_budget_mib: float | None = FLARE_BUDGET_MIB,
                   roi_settings: RoiSettings = RoiSettings()) -> list[CaseResult]:
    """Segment every `<case>_0000` image of `input_dir` (or only `cases`) into `output_dir/<case>.nii.gz`.

    model: a loaded model, or what to load (a ModelSpec, or a model folder loaded with ModelSpec's
    defaults), loaded once here. cases: the cases to do, e.g. one shard of a folder; default: every case
    found in `input_dir`. on_result is called after each case; on_skipped with the message for each
    file in `input_dir` that is not an input (default: a warning).

    roi_settings: the localiser's box rules and the tile grid it runs (inference.roi.RoiSettings).
    On CUDA the whole device's memory is kept within `gpu_memory_budget_mib` where the case allows
    (None: no budget); see inference.memory.gpu_plan.

    Folder-level problems (missing input folder, unusable model, unwritable output) raise
    InferenceError; a bad case gives a failed CaseResult and the others still run, except after an output
    that could not be written for lack of disk space: then every later case gets a failed CaseResult
    ("not attempted") without being run.
    """
    from inference.files.cases import find_cases
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_folders(input_dir, output_dir)
    if not isinstance(model, LoadedModel):
        model = (model if isinstance(model, ModelSpec) else ModelSpec(model)).load()
    if cases is None:
        cases, skipped = find_cases(input_dir, model.num_input_files, model.file_ending)
        for message in skipped:
            if on_skipped:
                on_skipped(message)
            else:
                warnings.warn(message, stacklevel=2)
    budget = model.engine.memory_budget(gpu_memory_budget_mib)
    results = []
    for index, case in enumerate(cases):
        result = segment_case(case, output_dir, model, tta=tta, step_size=step_size, progress=progress,
                              budget=budget, roi_settings=roi_settings)
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
