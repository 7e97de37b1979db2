"""Where the sliding window puts its tiles and how it weights them: plain rules shared by both engines'
sliding windows (inference.engines.torch_engine.sliding_window, inference.engines.numpy_engine.sliding_window).

The rules reproduce nnU-Net's predictor (the torch engine's sliding_window docstring lists them), so that
both engines agree with it.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def tile_starts(image_size: Sequence[int], tile_size: Sequence[int], step_size: float) -> list[list[int]]:
    """Start index of every tile along each axis: evenly spread, at most step_size * tile apart."""
    if not 0 < step_size <= 1:
        raise ValueError(f"step size must be in (0, 1], got {step_size}")
    starts = []
    for size, tile in zip(image_size, tile_size):
        if size < tile:
            raise ValueError(f"image size {tuple(image_size)} smaller than tile {tuple(tile_size)}")
        free = size - tile
        count = 1 + int(math.ceil(free / (tile * step_size)))
        spacing = free / (count - 1) if count > 1 else 0.0
        starts.append([int(round(i * spacing)) for i in range(count)])
    return starts


def tile_windows(image_size: Sequence[int], tile_size: Sequence[int], step_size: float) -> list[tuple[slice, ...]]:
    """The spatial slices of every tile, in raster order (last axis fastest)."""
    per_axis = [[slice(s, s + t) for s in starts]
                for starts, t in zip(tile_starts(image_size, tile_size, step_size), tile_size)]
    return list(itertools.product(*per_axis))


@dataclass(frozen=True)
class TilePlan:
    """The tiles to run on a padded image and where their logits go. windows: slices of the padded grid;
    covered: the box of the padded grid they cover (the accumulators' extent); cut: the slices of the
    covered box that hold the unpadded image; start: where that cut begins in the unpadded grid."""
    windows: list
    covered: tuple[tuple[int, int], ...]
    cut: tuple[slice, ...]
    start: tuple[int, ...]

    @property
    def covered_shape(self) -> tuple[int, ...]:
        return tuple(hi - lo for lo, hi in self.covered)

    def local(self, window: Sequence[slice]) -> tuple[slice, ...]:
        """`window` in the covered box's coordinates."""
        return tuple(slice(s.start - lo, s.stop - lo) for s, (lo, _) in zip(window, self.covered))


GRIDS = ("whole", "box")   # where a region's tiles come from (tile_plan)


def tile_plan(padded_shape: Sequence[int], keep: Sequence[slice], tile_size: Sequence[int], step_size: float,
              region: Sequence[tuple[int, int]] | None = None, grid: str = "whole") -> TilePlan:
    """The tiles to run for `region` ([start, stop) per axis of the unpadded grid; None: the whole image).

    grid "whole": the whole padded image's tile grid, kept where it meets the region. The kept windows
    are a product of per-axis runs of overlapping tiles, so every voxel of the box they cover lies in
    one (no weight is zero there), and every tile that covers a voxel of the region is run.
    grid "box": a grid of its own laid over the region (grown to one tile where it is smaller), as if
    the image were cropped to it: fewer tiles, but other tile positions than the whole image's."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    if region is None:
        windows = tile_windows(padded_shape, tile_size, step_size)
    else:
        region = [(lo + k.start, hi + k.start) for (lo, hi), k in zip(region, keep)]
        windows = (_grid_over(region, padded_shape, tile_size, step_size) if grid == "box" else
                   [w for w in tile_windows(padded_shape, tile_size, step_size)
                    if all(s.start < hi and s.stop > lo for s, (lo, hi) in zip(w, region))])
        if not windows:
            raise ValueError(f"region {tuple(region)} meets no tile of a {tuple(padded_shape)} grid")
    covered = tuple((min(w[a].start for w in windows), max(w[a].stop for w in windows))
                    for a in range(len(padded_shape)))
    cut, start = [], []
    for k, (lo, hi) in zip(keep, covered):
        a, b = max(k.start, lo), min(k.stop, hi)
        cut.append(slice(a - lo, b - lo))
        start.append(a - k.start)
    return TilePlan(windows, covered, tuple(cut), tuple(start))


def _grid_over(region: Sequence[tuple[int, int]], padded_shape: Sequence[int], tile_size: Sequence[int],
               step_size: float) -> list[tuple[slice, ...]]:
    """The windows of a tile grid of its own over `region` (padded coordinates), each axis grown to one
    tile where the region is narrower (centred, kept inside the padded image)."""
    grown = []
    for (lo, hi), tile, size in zip(region, tile_size, padded_shape):
        if hi - lo < tile:
            lo = max(0, min(lo - (tile - (hi - lo)) // 2, size - tile))
            hi = lo + tile
        grown.append((lo, hi))
    return [tuple(slice(s.start + lo, s.stop + lo) for s, (lo, _) in zip(w, grown))
            for w in tile_windows([hi - lo for lo, hi in grown], tile_size, step_size)]


def padded_grid(shape: Sequence[int], tile_size: Sequence[int]) -> tuple[tuple[int, ...], tuple[slice, ...]]:
    """The grid the sliding window tiles (an image smaller than a tile is zero-padded to it, centred, the
    odd voxel after, as both engines' pad_to_tile do) and the slices of it that hold the image."""
    padded = tuple(max(int(s), int(t)) for s, t in zip(shape, tile_size))
    keep = tuple(slice((p - s) // 2, (p - s) // 2 + s) for s, p in zip(shape, padded))
    return padded, keep


def tiles_meeting(shape: Sequence[int], tile_size: Sequence[int], step_size: float,
                  region: Sequence[tuple[int, int]] | None = None, grid: str = "whole") -> int:
    """How many tiles the sliding window runs on an image for `region` (None: the whole image)."""
    padded, keep = padded_grid(shape, tile_size)
    return len(tile_plan(padded, keep, tile_size, step_size, region, grid).windows)


def gaussian_importance(tile_size: Sequence[int], sigma_scale: float = 1 / 8, peak: float = 10.0) -> np.ndarray:
    """Importance map of one tile, float16: separable Gaussian centred at tile//2, as scipy's
    gaussian_filter of a unit impulse (truncate=4) gives it, scaled to `peak`.

    The map is rounded to fp16 and values that underflow there (tile corners) are lifted to the smallest
    remaining one, as nnU-Net does: that rounding decides how overlapping tiles blend near corners, so
    every path and device starts from this one fp16 map.
    """
    weights = np.ones((), dtype=np.float64)
    for size in tile_size:
        sigma = size * sigma_scale
        distance = np.arange(size, dtype=np.float64) - size // 2
        profile = np.exp(-0.5 * (distance / sigma) ** 2)
        profile[np.abs(distance) > int(4.0 * sigma + 0.5)] = 0
        weights = weights[..., None] * profile
    # via float32, as torch converts float64 to float16 (two roundings; direct rounding differs in a
    # few hundred corner voxels of a large tile)
    weights = (weights * (peak / weights.max())).astype(np.float32).astype(np.float16)
    underflow = weights == 0
    if underflow.any():
        weights[underflow] = weights[~underflow].min()
    return weights


def mirror_combinations(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """Batched-tensor dims to flip for each extra TTA view: every non-empty subset of the spatial axes
    (shifted past batch and channel), smaller subsets first."""
    dims = [2 + axis for axis in (mirror_axes or ())]
    subsets = [tuple(d for bit, d in enumerate(dims) if mask >> bit & 1) for mask in range(1, 1 << len(dims))]
    return sorted(subsets, key=lambda s: (len(s), [dims.index(d) for d in s]))
