"""ROI-first prediction: a coarse localiser finds the organs' box, the full model runs only inside it.

A model folder may carry `localizer/`, itself a standard nnU-Net v2 model folder at a coarse spacing
(imported with `python -m inference.weights import ... --localizer DIR`, covered by the folder's
manifest). For each case the predictor
  1. runs the localiser on the whole image (its own preprocessing, sliding window, no TTA);
  2. takes the box of all its foreground labels in the localiser's network grid and maps it back to
     the input's voxel grid (through the localiser's resampling and nonzero crop);
  3. widens it by `margin_mm` on every side, and to at least one full-model patch where the image
     allows (a smaller region would need the same single tile, with padding instead of real context);
  4. clips it to the image, and gives it the image's full extent along the patient's cranio-caudal
     (superior-inferior) axis (`si_axis`): in abdominal MRI the aorta, the IVC and the oesophagus run
     through the whole cranio-caudal field of view, and organs near its ends (kidneys, duodenum) are
     where a coarse localiser is least sure, so a crop along that axis cuts them by design; the saving
     lies in-plane (air and arms around the body);
  5. runs the full model on that sub-image and places the labels back into a zero label map of the
     whole grid (the crop is an array slice, so spacing, origin and direction of the output are the
     input's, whatever the orientation).
It falls back to the whole image when the localiser finds nothing, finds less than
`min_foreground_ml` of organ volume (implausible for an abdominal MRI with any of the 13 organs), or
when the box covers more than `max_box_fraction` of the image (little to save; with the full
cranio-caudal extent this is the in-plane fraction). nnU-Net's predictor has
no such stage, so it is written here, on top of this package's own preprocessing and sliding window.

What changes inside the box compared with the whole image: the model's intensity normalisation is
computed over the box (as if the scanner had acquired only the box), and the tiles are placed over
the box. For a MIND model the descriptors are computed once, over the box only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch

LOCALIZER_DIR = "localizer"
DEFAULT_MARGIN_MM = 20.0         # covers the localiser's 8 mm grid (one cell) plus its boundary error
MIN_FOREGROUND_ML = 50.0         # less organ volume than this is no evidence of where the organs are
MAX_BOX_FRACTION = 0.5           # above: at most 2x fewer voxels, often no fewer tiles, and the risk
                                 # of cutting an organ end the localiser missed (measured on samples/,
                                 # docs/roi.md): the whole image is the better bet


@dataclass(frozen=True)
class RoiSettings:
    margin_mm: float = DEFAULT_MARGIN_MM
    min_foreground_ml: float = MIN_FOREGROUND_ML
    max_box_fraction: float = MAX_BOX_FRACTION


@dataclass
class RoiDecision:
    """What the localiser decided for one case. box: slices (Z, Y, X) of the input array, or None for
    the whole image; reason: why (for logs and benchmarks); fraction: box volume / image volume."""
    box: tuple[slice, ...] | None
    reason: str
    foreground_ml: float = 0.0
    fraction: float = 1.0


def load_localizer(model_dir: Path, device, *, backend: str = "auto", precision: str = "auto",
                   batch_size: int | None = None, threads: int | None = None):
    """The localiser of `model_dir` (its `localizer/` folder), checked against the folder's manifest.

    `backend`, `precision`, `batch_size`, `threads`: as for inference.model.loading.load_model. The engine is
    resolved here, because the manifest lives in `model_dir`, not in `localizer/` (load_model would find
    none to check): the files it will read (jsons, checkpoints, and the OpenVINO IR when that is the
    engine) are verified, then the localiser is loaded with that engine.
    """
    from inference.engines.choice import IR_BIN, IR_XML, choose_backend, fold_has_ir, openvino_installed
    from inference.device import device_type
    from inference.model.manifest import verify_files
    from inference.model.loading import DEFAULT_CHECKPOINT, available_folds, load_model
    loc_dir = Path(model_dir) / LOCALIZER_DIR
    folds = available_folds(loc_dir, DEFAULT_CHECKPOINT)
    engine = choose_backend(backend, device_type(device), all(fold_has_ir(loc_dir / f"fold_{f}") for f in folds),
                            openvino_installed())
    read = ["dataset.json", "plans.json"] + [f"fold_{f}/{DEFAULT_CHECKPOINT}" for f in folds]
    if engine == "openvino":
        read += [f"fold_{f}/{name}" for f in folds for name in (IR_XML, IR_BIN)]
    verify_files(Path(model_dir), [f"{LOCALIZER_DIR}/{name}" for name in read])
    return load_model(loc_dir, folds, DEFAULT_CHECKPOINT, device, backend=engine, precision=precision,
                      batch_size=batch_size, threads=threads)


def foreground_box(image: np.ndarray | torch.Tensor, spacing, localizer) -> tuple[list[tuple[int, int]], float]:
    """Box [start, stop) per input axis (Z, Y, X) of the localiser's foreground, and its volume in mL;
    (None, 0.0) when it finds none. The box is the set of input voxels whose centres fall inside the
    foreground cells of the localiser's network grid."""
    if localizer.plan.backend == "openvino":   # numpy and OpenVINO, without torch (inference.engines.numpy_engine.pipeline)
        from inference.engines.numpy_engine import pipeline as host
        prep = host.preprocess(np.asarray(image), spacing, localizer, "localizer input")
        logits = host.predict_logits(prep.data, localizer.networks, localizer.num_classes,
                                     localizer.config.patch_size, 0.5, None, None)
        mask = logits.argmax(0) > 0
    else:
        from inference.engines.torch_engine.preprocess import preprocess
        from inference.engines.torch_engine.sliding_window import predict_logits
        prep = preprocess(image, spacing, localizer, "localizer input")
        logits = predict_logits(prep.data, localizer.networks, localizer.num_classes, localizer.config.patch_size,
                                0.5, None, None)
        mask = (logits.argmax(0) > 0).cpu().numpy()
    del logits
    cell_ml = float(np.prod(localizer.config.spacing)) / 1000.0
    count = int(mask.sum())
    if count == 0:
        return None, 0.0
    tf = localizer.transpose_forward
    box_t = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        first, last = int(hits[0]), int(hits[-1]) + 1
        n_cells = mask.shape[axis]
        start_crop, stop_crop = prep.bbox[axis]
        extent = stop_crop - start_crop
        # cell c covers input positions [c, c + 1) * extent / n_cells of the cropped axis
        lo = start_crop + int(math.floor(first * extent / n_cells))
        hi = start_crop + int(math.ceil(last * extent / n_cells))
        box_t.append((lo, hi))
    box = [None] * len(box_t)
    for t, axis in enumerate(tf):      # transposed axis t is input axis tf[t]
        box[axis] = box_t[t]
    return box, count * cell_ml


def widen_box(box, shape, spacing, margin_mm: float, min_extent_mm) -> list[tuple[int, int]]:
    """`box` grown by margin_mm on each side and to at least min_extent_mm per axis (input axes),
    clipped to `shape`; a box that must grow past one border grows at the other."""
    out = []
    for (lo, hi), n, s, min_mm in zip(box, shape, spacing, min_extent_mm):
        pad = int(math.ceil(margin_mm / s))
        lo, hi = lo - pad, hi + pad
        need = int(math.ceil(min_mm / s)) - (hi - lo)
        if need > 0:
            lo, hi = lo - need // 2, hi + need - need // 2
        if lo < 0:
            lo, hi = 0, hi - lo
        if hi > n:
            lo, hi = lo - (hi - n), n
        out.append((max(lo, 0), min(hi, n)))
    return out


def patch_extent_mm(model) -> list[float]:
    """Physical extent (mm) of one full-model patch per input axis (Z, Y, X)."""
    extent_t = [p * s for p, s in zip(model.config.patch_size, model.config.spacing)]
    out = [0.0] * len(extent_t)
    for t, axis in enumerate(model.transpose_forward):
        out[axis] = extent_t[t]
    return out


def si_axis(direction=None, ndim: int = 3) -> int:
    """The array axis (of a (Z, Y, X) array, SimpleITK's axis order reversed) that runs closest to the
    patient's superior-inferior axis: the image axis whose direction cosine has the largest |component|
    along the patient z axis (the same axis in LPS and RAS; the sign, i.e. a flipped axis, does not
    matter). `direction` is SimpleITK's row-major ndim x ndim matrix (column j: the direction of image
    axis j); None means an axial acquisition: the array's first axis. A tie (an axis exactly at 45
    degrees) goes to the axis nearest the array's first."""
    if direction is None:
        return 0
    d = np.asarray(direction, dtype=float)
    if d.size != ndim * ndim or not np.all(np.isfinite(d)):
        raise ValueError(f"direction must be {ndim * ndim} finite numbers, got {tuple(direction)}")
    along_z = np.abs(d.reshape(ndim, ndim)[ndim - 1])      # row: patient z component of each image axis
    along_z_array = along_z[::-1]                           # image axis j is array axis ndim - 1 - j
    return int(np.argmax(np.round(along_z_array, 6)))       # rounding: a 45 degree tie is a tie


def decide_box(image, spacing, model, settings: RoiSettings = RoiSettings(), direction=None) -> RoiDecision:
    """Run the model's localiser on the whole image and decide the box (or the whole image). The box
    keeps the whole cranio-caudal extent (`si_axis(direction)`, module docstring) and crops only the
    other two axes; `direction`: the image's SimpleITK direction cosines, None for an axial array."""
    shape = tuple(image.shape[1:])
    box, ml = foreground_box(image, spacing, model.localizer)
    if box is None:
        return RoiDecision(None, "localizer found no foreground")
    if ml < settings.min_foreground_ml:
        return RoiDecision(None, f"localizer found only {ml:.0f} mL (< {settings.min_foreground_ml:.0f} mL)", ml)
    box = widen_box(box, shape, spacing, settings.margin_mm, patch_extent_mm(model))
    axis = si_axis(direction, len(shape))
    box[axis] = (0, shape[axis])
    fraction = float(np.prod([b - a for a, b in box]) / np.prod(shape))
    if fraction > settings.max_box_fraction:
        return RoiDecision(None, f"box covers {100 * fraction:.0f} % of the image", ml, fraction)
    return RoiDecision(tuple(slice(a, b) for a, b in box), "box", ml, fraction)


def segment_with_roi(image, model, segment: Callable, timer, settings: RoiSettings = RoiSettings(),
                     spacing=None, decision: RoiDecision | None = None, direction=None) -> np.ndarray:
    """Label map of the whole image: `segment(sub_image, model_without_localizer)` run on the box the
    localiser finds (stage "localize" in `timer`), or on the whole image when it falls back.
    `direction`: the image's SimpleITK direction cosines (which axis is cranio-caudal; decide_box)."""
    plain = replace(model, localizer=None)
    if decision is None:
        with timer.stage("localize"):
            decision = decide_box(image, spacing, model, settings, direction=direction)
    if decision.box is None:
        return segment(image, plain)
    labels = segment(image[(slice(None), *decision.box)], plain)
    full = np.zeros(tuple(image.shape[1:]), dtype=labels.dtype)
    full[decision.box] = labels
    return full
