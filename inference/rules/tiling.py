"""Where the sliding window puts its tiles and how it weights them: plain rules shared by both engines'
sliding windows (inference.engines.torch_engine.sliding_window, inference.engines.numpy_engine.sliding_window).

The rules reproduce nnU-Net's predictor (the torch engine's sliding_window docstring lists them), so that
both engines agree with it.
"""
from __future__ import annotations

import itertools
import math
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
