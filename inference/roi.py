"""ROI-first prediction: a coarse localiser finds the organs' box, the full model runs only the tiles
that meet it.

A model folder may carry `localizer/`, itself a standard nnU-Net v2 model folder at a coarse spacing
(imported with `python -m inference.weights import ... --localizer DIR`, covered by the folder's
manifest). For each case the predictor
  1. runs the localiser on the whole image (its own preprocessing, sliding window, no TTA);
  2. takes the box of all its foreground labels in the localiser's network grid and maps it back to
     the input's voxel grid (through the localiser's resampling and nonzero crop);
  3. widens it by `margin_mm` on every side, and to at least one full-model patch where the image
     allows (a smaller box rarely meets fewer tiles of the image's grid);
  4. clips it to the image, and gives it the image's full extent along the patient's cranio-caudal
     (superior-inferior) axis (`si_axis`): in abdominal MRI the aorta, the IVC and the oesophagus run
     through the whole cranio-caudal field of view, and organs near its ends (kidneys, duodenum) are
     where a coarse localiser is least sure, so a crop along that axis cuts them by design; the saving
     lies in-plane (air and arms around the body);
  5. preprocesses the whole image exactly as without a box (same crop to nonzero, same normalisation
     statistics, same resampled grid), lays out the whole image's tile grid, runs the full model only
     on the tiles that meet the box (mapped to the network grid, with the few voxels the export's
     interpolation reads past it: inference.rules.region), and exports only the box; everything
     outside it is background (the output is the input's grid, so spacing, origin and direction are
     the input's, whatever the orientation).
It falls back to the whole image when the localiser finds nothing, finds less than
`min_foreground_ml` of organ volume (implausible for an abdominal MRI with any of the 13 organs), or
when the box covers more than `max_box_fraction` of the image (little to save; with the full
cranio-caudal extent this is the in-plane fraction). The localiser is not run at all (the whole image
is, as with --no-roi) where the geometry alone shows that no box it could give spares a tile of the
whole image's grid (`box_could_spare_tiles`: every in-plane axis of the network grid under two
patches); it would cost time and save none. When, after preprocessing, the box meets every
tile of the whole image, the whole image runs (the same cost) and the box is kept all the same
(inference.api: background outside it). nnU-Net's predictor has
no such stage, so it is written here, on top of this package's own preprocessing and sliding window.

What changes inside the box compared with the whole image: nothing. Every tile that covers a voxel of
the box is run on the same input, so there the logits, and the labels, are the whole image's run's
term for term (only which tiles share a network batch may differ); the saving is the tiles that lie
wholly outside it. A MIND model computes its descriptors once, over the
whole image, as without a box.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from inference.engines.base import Window
from inference.rules.preprocessing import mask_bbox
from inference.rules.spacing import new_shape_for_spacing
from inference.rules.tiling import GRIDS

if TYPE_CHECKING:
    from inference.model.loaded import LoadedModel

DEFAULT_MARGIN_MM = 20.0         # covers the localiser's 8 mm grid (one cell) plus its boundary error
MIN_FOREGROUND_ML = 50.0         # less organ volume than this is no evidence of where the organs are
MAX_BOX_FRACTION = 0.5           # above: at most 2x fewer voxels, often no fewer tiles, and the risk
                                 # of cutting an organ end the localiser missed (measured on samples/,
                                 # docs/roi.md): the whole image is the better bet


@dataclass(frozen=True)
class RoiSettings:
    """The box's rules, and which tiles the full model runs for it: grid "whole" (default) runs every tile
    of the whole image's grid that meets the box, so the labels inside it are the whole image's; grid
    "box" lays a tile grid of its own over the box (fewer tiles on large fields, but other tile
    positions, so labels may differ: docs/roi.md measures both)."""
    margin_mm: float = DEFAULT_MARGIN_MM
    min_foreground_ml: float = MIN_FOREGROUND_ML
    max_box_fraction: float = MAX_BOX_FRACTION
    grid: str = "whole"

    def __post_init__(self):
        if self.grid not in GRIDS:
            raise ValueError(f"ROI grid must be one of {GRIDS}, got {self.grid!r}")


@dataclass
class RoiDecision:
    """What the localiser decided for one case. box: slices (Z, Y, X) of the input array, or None for
    the whole image; reason: why (for logs and benchmarks); fraction: box volume / image volume."""
    box: tuple[slice, ...] | None
    reason: str
    foreground_ml: float = 0.0
    fraction: float = 1.0


def foreground_box(image: np.ndarray, spacing, localizer: LoadedModel, source: str = "image",
                   shared: dict | None = None) -> tuple[list[tuple[int, int]] | None, float]:
    """Box [start, stop) per input axis (Z, Y, X) of the localiser's foreground, and its volume in mL;
    (None, 0.0) when it finds none. The box is the set of input voxels whose centres fall inside the
    foreground cells of the localiser's network grid."""
    engine, where = localizer.engine, f"{source} (localizer input)"
    engine.prepare(localizer)           # its network compiles while its input is prepared
    prep = engine.preprocess(image, spacing, localizer, where, shared=shared)
    mask = engine.foreground(engine.predict_logits(prep, localizer, Window(), where))
    found = mask_bbox(mask)
    if found is None:
        return None, 0.0
    box_t = []
    for (first, last), n_cells, (start_crop, stop_crop) in zip(found, mask.shape, prep.bbox):
        extent = stop_crop - start_crop
        # cell c covers input positions [c, c + 1) * extent / n_cells of the cropped axis
        box_t.append((start_crop + int(math.floor(first * extent / n_cells)),
                      start_crop + int(math.ceil(last * extent / n_cells))))
    box = [None] * len(box_t)
    for t, axis in enumerate(localizer.transpose_forward):      # transposed axis t is input axis tf[t]
        box[axis] = box_t[t]
    cell_ml = float(np.prod(localizer.config.spacing)) / 1000.0
    return box, int(mask.sum()) * cell_ml


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


def box_could_spare_tiles(image: np.ndarray, spacing, model: LoadedModel, direction=None) -> bool:
    """Whether any box decide_box could give might spare a tile of the whole image's grid (grid "whole"),
    decided from the geometry alone, before the localiser runs. False: it cannot save time, so the
    caller runs the whole image without it (inference.api).

    Along an axis of the network grid of length L, the whole grid's tiles start at 0 and at L - P (P: the
    patch; an image under a patch is padded to it), so a box w voxels wide misses one only where
    L >= P + w. decide_box makes every box at least a patch wide in millimetres (widen_box), which the
    resampling keeps at least P network voxels (to within rounding), and the cranio-caudal axis is never
    narrowed: where each other axis has L < 2P - 1, no box spares a tile. Conservative (True) where a
    crop to nonzero could narrow a box below a patch (zero planes at an end of an axis) and for MIND
    models (their crop is the descriptors')."""
    if model.mind_params is not None:
        return True
    shape = tuple(image.shape[1:])
    if min(shape) == 0:
        return False     # nothing to tile: the whole-image path refuses it, naming the grid
    cc = si_axis(direction, len(shape))
    for t, axis in enumerate(model.transpose_forward):
        if axis == cc:
            continue
        length = new_shape_for_spacing([shape[axis]], [spacing[axis]], [model.config.spacing[t]])[0]
        if length >= 2 * model.config.patch_size[t] - 1 or not _nonzero_at_both_ends(image, axis):
            return True
    return False


def _nonzero_at_both_ends(image: np.ndarray, axis: int) -> bool:
    """Whether the first and the last plane along `axis` (of the (Z, Y, X) grid) hold a finite nonzero
    voxel in some channel: then the crop to nonzero keeps the whole axis."""
    def holds(index: int) -> bool:
        plane = np.take(image, index, axis=axis + 1)
        return bool(np.any((plane != 0) & np.isfinite(plane)))
    return holds(0) and holds(image.shape[axis + 1] - 1)


def decide_box(image, spacing, model, settings: RoiSettings = RoiSettings(), direction=None,
               source: str = "image", shared: dict | None = None) -> RoiDecision:
    """Run the model's localiser on the whole image and decide the box (or the whole image). The box
    keeps the whole cranio-caudal extent (`si_axis(direction)`, module docstring) and crops only the
    other two axes; `direction`: the image's SimpleITK direction cosines, None for an axial array.
    `source` names the image (its file) in messages; `shared`: the case's preprocessing memo (Engine.preprocess)."""
    shape = tuple(image.shape[1:])
    box, ml = foreground_box(image, spacing, model.localizer, source, shared)
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
