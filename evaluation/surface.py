"""Volume Dice and the Normalised Surface Dice (NSD) of two 3D masks.

NSD (Nikolov et al. 2018, "Deep learning to achieve clinically applicable segmentation of head and neck
anatomy for radiotherapy", the "surface DSC"): take the surface of each mask as a set of small surface
elements with areas; an element is "within tolerance" when the other mask's surface is no farther
than the tolerance; NSD = (area of both surfaces within tolerance) / (area of both surfaces).

How the surfaces are made here, as the FLARE scorer makes them (so values match it to the last digit):
- Surface points live on the lattice of voxel corners. A corner touches 2x2x2 voxels; which of them
  are inside the mask is an 8-bit pattern. A corner whose pattern is neither all-outside nor
  all-inside lies on the surface.
- The area a corner stands for is the area of the marching-cubes triangles of its pattern, at the
  voxel spacing. That table is taken from DeepMind's `surface_distance.lookup_tables` (data only).
- The distance of a surface point to the other surface is the Euclidean distance (mm) to the nearest
  surface point of the other mask, from SciPy's exact distance transform on the corner lattice.

Why `surface_distance.metrics` is not called: release 0.1 (the only one on PyPI) uses `np.NaN`/`np.Inf`
(gone in NumPy 2; it raises on empty masks) and the `scipy.ndimage.filters`/`morphology` namespaces
(SciPy 2.0 removes them). tests/test_evaluation.py checks equality with it on masks where it works, and
tests/test_evaluation_official.py with the organisers' own numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import product

import numpy as np
from scipy import ndimage
from surface_distance import lookup_tables

# Bit of each of the 8 voxels around a corner, keyed by its offset (0 = the voxel below the corner,
# 1 = the voxel above it, along each axis). The marching-cubes area table is indexed by patterns
# built with this bit order (`ENCODE_NEIGHBOURHOOD_3D_KERNEL` holds the same weights).
_CORNER_BITS = {offset: 7 - (4 * offset[0] + 2 * offset[1] + offset[2]) for offset in product((0, 1), repeat=3)}


@lru_cache(maxsize=64)
def _pattern_areas_mm2(spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """(256,) float64: the surface area (mm^2) a corner stands for, per 8-bit pattern, at this spacing."""
    return np.asarray(lookup_tables.create_table_neighbour_code_to_surface_area(spacing_mm), np.float64)


@dataclass(frozen=True)
class SurfaceSide:
    """One mask's surface, seen from the other: per surface point (in lattice C order), the distance in
    mm to the other mask's surface (+inf when that surface is empty) and the area it stands for (mm^2)."""
    distance_mm: np.ndarray
    area_mm2: np.ndarray

    def area_within(self, tolerance_mm: float) -> float:
        return self.area_mm2[self.distance_mm <= tolerance_mm].sum()

    def total_area(self) -> float:
        return self.area_mm2.sum()


@dataclass(frozen=True)
class SurfacePair:
    """Ground-truth and predicted surfaces, each with distances to the other."""
    gt: SurfaceSide
    pred: SurfaceSide


def _union_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding every voxel of either mask; None when both are empty (or have no voxels,
    as the empty axial slab of a one-slice tube under the FLARE range rule)."""
    if a.size == 0:
        return None
    found = ndimage.find_objects((a | b).astype(np.uint8))
    return found[0] if found else None


def _corner_patterns(voxels: np.ndarray) -> np.ndarray:
    """8-bit inside/outside pattern at every corner of the voxels; shape = voxels.shape + 1.

    Corner c along an axis sits between voxels c - 1 and c, so a zero layer is added on both sides and
    each of the 8 offsets reads a shifted view of it.
    """
    padded = np.pad(voxels.astype(np.uint8), 1)
    corners = tuple(n + 1 for n in voxels.shape)
    pattern = np.zeros(corners, np.uint8)
    for (di, dj, dk), bit in _CORNER_BITS.items():
        view = padded[di:di + corners[0], dj:dj + corners[1], dk:dk + corners[2]]
        pattern |= view << bit
    return pattern


def _distance_to(surface: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Distance (mm) from every corner to the nearest point of `surface`; +inf everywhere if it is empty."""
    if not surface.any():
        return np.full(surface.shape, np.inf)
    return ndimage.distance_transform_edt(~surface, sampling=spacing_mm)


def surface_distances(mask_gt: np.ndarray, mask_pred: np.ndarray,
                      spacing_mm: tuple[float, float, float]) -> SurfacePair:
    """Surfaces of two 3D boolean masks of one shape, with each point's distance to the other surface.

    spacing_mm: voxel size along the three array axes, in mm (the FLARE scorer passes the GT NIfTI
    header zooms with the nibabel array, whose axes are x, y, z). Empty masks give empty sides.
    """
    mask_gt = np.asarray(mask_gt, dtype=bool)
    mask_pred = np.asarray(mask_pred, dtype=bool)
    if mask_gt.ndim != 3 or mask_gt.shape != mask_pred.shape:
        raise ValueError(f"need two 3D masks of one shape, got {mask_gt.shape} and {mask_pred.shape}")
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3:
        raise ValueError(f"spacing_mm must have 3 values, got {spacing_mm!r}")
    box = _union_box(mask_gt, mask_pred)
    if box is None:
        nothing = SurfaceSide(np.zeros(0), np.zeros(0))
        return SurfacePair(nothing, nothing)
    # Only the box matters: distances between surface points do not depend on what lies outside it.
    patterns = [_corner_patterns(m[box]) for m in (mask_gt, mask_pred)]
    on_surface = [(p != 0) & (p != 255) for p in patterns]
    distance_maps = [_distance_to(s, spacing) for s in on_surface]
    areas = _pattern_areas_mm2(spacing)
    gt_side = SurfaceSide(distance_maps[1][on_surface[0]], areas[patterns[0][on_surface[0]]])
    pred_side = SurfaceSide(distance_maps[0][on_surface[1]], areas[patterns[1][on_surface[1]]])
    return SurfacePair(gt_side, pred_side)


def normalised_surface_dice(pair: SurfacePair, tolerance_mm: float) -> float:
    """Share of the two surfaces' total area that lies within `tolerance_mm` (<=) of the other surface,
    in [0, 1]. NaN when both surfaces are empty (0/0)."""
    total = pair.gt.total_area() + pair.pred.total_area()
    if total == 0:
        return float("nan")
    return (pair.gt.area_within(tolerance_mm) + pair.pred.area_within(tolerance_mm)) / total


def volume_dice(mask_gt: np.ndarray, mask_pred: np.ndarray) -> float:
    """Soerensen-Dice 2|A & B| / (|A| + |B|) of two boolean masks; NaN when both are empty (0/0)."""
    sizes = int(np.count_nonzero(mask_gt)) + int(np.count_nonzero(mask_pred))
    if sizes == 0:
        return float("nan")
    return 2 * int(np.count_nonzero(mask_gt & mask_pred)) / sizes
