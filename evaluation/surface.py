"""Surface distances and the Normalised Surface Dice (NSD) with DeepMind's surfel algorithm.

The algorithm (Nikolov et al. 2021, github.com/deepmind/surface-distance), as the official FLARE scorer
uses it:
1. crop both masks to the bounding box of their union, padded by one voxel on the upper side;
2. encode every 2x2x2 neighbourhood of voxels as an 8-bit code; the code lives on the voxel-corner
   lattice, and a corner is a surface element ("surfel") when its code is neither 0 nor 255;
3. the area of a surfel is the area of the marching-cubes triangles of its code, scaled by the spacing;
4. the distance of a surfel to the other surface is the Euclidean distance transform (in mm) to the
   nearest surfel of the other mask;
5. NSD at tolerance t = (area of gt surfels within t + area of pred surfels within t) / (total area).

Why not call `surface_distance.metrics` directly: release 0.1 (the only one on PyPI) uses `np.NaN` and
`np.Inf`, removed in NumPy 2, so it raises AttributeError for empty masks, and it imports
`scipy.ndimage.filters` / `scipy.ndimage.morphology`, namespaces that SciPy 2.0 removes. It also sorts
surfels in a Python loop, which NSD does not need. So this module re-implements steps 1-5 and takes
only the marching-cubes area table (`surface_distance.lookup_tables`, plain data that still works) from
the package, so the areas are bit-identical to the official scorer's. tests/test_evaluation.py checks
equality with the package on masks where the package still works.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from surface_distance import lookup_tables as _tables

# Weights of the 2x2x2 neighbourhood code: output[i] encodes input[i-1:i+1] along every axis.
_CODE_KERNEL = np.asarray(_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL)


@lru_cache(maxsize=64)
def _area_table(spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """(256,) float64: surfel area in mm^2 of each neighbourhood code at this spacing."""
    return np.asarray(_tables.create_table_neighbour_code_to_surface_area(spacing_mm), dtype=np.float64)


@dataclass(frozen=True)
class SurfaceDistances:
    """Per-surfel distances (mm) to the other surface and surfel areas (mm^2), unsorted.

    A mask with no surfels has empty arrays; distances to an empty surface are +inf.
    """
    distances_gt_to_pred: np.ndarray
    distances_pred_to_gt: np.ndarray
    surfel_areas_gt: np.ndarray
    surfel_areas_pred: np.ndarray


def _crop_union(mask_gt: np.ndarray, mask_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop both masks to their union's bounding box, zero-padded by one voxel at the upper end of each
    axis (the lower neighbour comes from the correlation's zero boundary). None when both are empty."""
    union = mask_gt | mask_pred
    lo, hi = [], []
    for axis in range(3):
        proj = np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != axis)))
        if proj.size == 0:
            return None
        lo.append(proj[0])
        hi.append(proj[-1] + 1)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    shape = tuple(b - a + 1 for a, b in zip(lo, hi))
    out = []
    for m in (mask_gt, mask_pred):
        c = np.zeros(shape, np.uint8)
        c[:-1, :-1, :-1] = m[sl]
        out.append(c)
    return out[0], out[1]


def compute_surface_distances(mask_gt: np.ndarray, mask_pred: np.ndarray,
                              spacing_mm: tuple[float, float, float]) -> SurfaceDistances:
    """Surfel distances between two 3D boolean masks of the same shape.

    spacing_mm: voxel size along the three array axes, in mm (the official scorer passes the GT
    NIfTI header zooms with the nibabel array, whose axes are x, y, z).
    """
    mask_gt = np.asarray(mask_gt, dtype=bool)
    mask_pred = np.asarray(mask_pred, dtype=bool)
    if mask_gt.ndim != 3 or mask_gt.shape != mask_pred.shape:
        raise ValueError(f"need two 3D masks of one shape, got {mask_gt.shape} and {mask_pred.shape}")
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3:
        raise ValueError(f"spacing_mm must have 3 values, got {spacing_mm!r}")
    empty = np.zeros(0)
    cropped = _crop_union(mask_gt, mask_pred)
    if cropped is None:
        return SurfaceDistances(empty, empty, empty, empty)
    areas = _area_table(spacing)
    codes, borders, distmaps = [], [], []
    for crop in cropped:
        code = ndimage.correlate(crop, _CODE_KERNEL, mode="constant", cval=0)
        border = (code != 0) & (code != 255)
        codes.append(code)
        borders.append(border)
        if border.any():
            distmaps.append(ndimage.distance_transform_edt(~border, sampling=spacing))
        else:
            distmaps.append(np.full(border.shape, np.inf))
    return SurfaceDistances(
        distances_gt_to_pred=distmaps[1][borders[0]],
        distances_pred_to_gt=distmaps[0][borders[1]],
        surfel_areas_gt=areas[codes[0][borders[0]]],
        surfel_areas_pred=areas[codes[1][borders[1]]],
    )


def surface_dice_at_tolerance(d: SurfaceDistances, tolerance_mm: float) -> float:
    """Normalised Surface Dice in [0, 1]: surfel area within `tolerance_mm` (distance <= tolerance) of
    the other surface, over the total surfel area of both. NaN when both surfaces are empty (0/0, as
    the package computes it)."""
    overlap = (d.surfel_areas_gt[d.distances_gt_to_pred <= tolerance_mm].sum()
               + d.surfel_areas_pred[d.distances_pred_to_gt <= tolerance_mm].sum())
    total = d.surfel_areas_gt.sum() + d.surfel_areas_pred.sum()
    if total == 0:
        return float("nan")
    return overlap / total


def dice_coefficient(mask_gt: np.ndarray, mask_pred: np.ndarray) -> float:
    """Soerensen-Dice 2|A & B| / (|A| + |B|) of two boolean masks; NaN when both are empty (as the
    package's compute_dice_coefficient)."""
    volume_sum = int(mask_gt.sum()) + int(mask_pred.sum())
    if volume_sum == 0:
        return float("nan")
    return 2 * int((mask_gt & mask_pred).sum()) / volume_sum
