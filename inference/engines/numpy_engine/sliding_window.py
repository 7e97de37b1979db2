"""Sliding-window prediction in numpy, the network run through OpenVINO: the rules of
inference.rules.tiling (tile positions, Gaussian weights, mirroring), logits accumulated in float32."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from inference.rules.region import RegionLogits
from inference.rules.tiling import gaussian_importance, mirror_combinations, tile_plan


def pad_to_tile(data: np.ndarray, tile_size: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad (C, X, Y, Z) up to the tile size where smaller, split evenly (extra voxel after)."""
    pads, keep = [(0, 0)], []
    for size, tile in zip(data.shape[1:], tile_size):
        missing = max(tile - size, 0)
        pads.append((missing // 2, missing - missing // 2))
        keep.append(slice(missing // 2, missing // 2 + size))
    if not any(a or b for a, b in pads):
        return data, tuple(keep)
    return np.pad(data, pads), tuple(keep)


def mean_over_views(networks: Sequence[Callable], tiles: np.ndarray, flips: list[tuple[int, ...]]) -> np.ndarray:
    """Logits of a (B, C, *tile) batch averaged over every fold and every mirrored view of it."""
    total = None
    views = [()] + list(flips)
    for dims in views:
        seen = np.flip(tiles, dims) if dims else tiles
        for network in networks:
            out = network(seen)
            if dims:
                out = np.flip(out, dims)
            if total is None:
                total = np.array(out, dtype=np.float32)
            else:
                total += out
    count = len(views) * len(networks)
    if count > 1:
        total /= np.float32(count)
    return total


def predict_logits(data: np.ndarray, networks: Sequence[Callable], num_classes: int, patch_size: Sequence[int],
                   step_size: float = 0.5, mirror_axes: Sequence[int] | None = None,
                   progress: Callable[[int, int], None] | None = None, batch_size: int = 1,
                   region: Sequence[tuple[int, int]] | None = None, grid: str = "whole") -> np.ndarray | RegionLogits:
    """inference.engines.torch_engine.sliding_window.predict_logits in numpy: (K, X, Y, Z) float32 logits of a (C, X, Y, Z)
    image, each voxel the Gaussian-weighted mean of its tiles' logits (accumulated in float32).

    `region` ([start, stop) per axis of the image): run only the tiles of the whole image's grid that
    meet it (grid "whole") or a grid over it (grid "box": inference.rules.tiling.tile_plan) and return
    RegionLogits of the box they cover (inference.rules.region); `progress` then counts those tiles."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    padded, keep = pad_to_tile(data, patch_size)
    plan = tile_plan(padded.shape[1:], keep, patch_size, step_size, region, grid)
    windows = plan.windows
    flips = mirror_combinations(mirror_axes)
    importance = gaussian_importance(patch_size).astype(np.float32)
    logits = np.zeros((num_classes, *plan.covered_shape), dtype=np.float32)
    weights = np.zeros(plan.covered_shape, dtype=np.float32)
    for first in range(0, len(windows), batch_size):
        group = windows[first:first + batch_size]
        tiles = np.stack([padded[(slice(None), *w)] for w in group])
        for window, tile_logits in zip(group, mean_over_views(networks, tiles, flips)):
            tile_logits *= importance
            local = plan.local(window)
            logits[(slice(None), *local)] += tile_logits
            weights[local] += importance
        if progress:
            for done in range(first + 1, first + len(group) + 1):
                progress(done, len(windows))
    logits /= weights
    logits = logits[(slice(None), *plan.cut)]
    return logits if region is None else RegionLogits(logits, plan.start)
