"""Sliding-window prediction of a preprocessed image, tile by tile (or a batch of tiles at a time).

What must match nnU-Net's predictor, so that its results agree with ours (documented behaviour, checked
by tests/test_inference_units.py and tests/test_inference_equivalence.py):
- tile grid: per axis, the fewest tiles whose starts are at most step * tile apart, spread evenly over
  [0, size - tile] and rounded;
- images smaller than a tile are zero-padded, centred (the odd voxel after);
- every tile's logits are weighted by a Gaussian importance map (sigma = tile / 8, cut at 4 sigma,
  peaking at 10, held in fp16 with its underflowed corners set to the smallest value left), and each
  voxel's logits are the weighted sum over its tiles divided by the sum of the weights;
- test-time mirroring averages the logits of the tile seen through every subset of the allowed axes
  (flipped in, flipped back out), the empty subset included.

Our own choices: all folds run on each tile (an ensemble is one pass over the image), several tiles can
go through the network at once (`batch_size`; positions and weights do not change), and logits are
summed in float32 on the image's device whatever the network's precision: fp32's range cannot overflow
(at most 10 x |logit| x tiles per voxel), where nnU-Net's fp16 buffer saturates at 65504.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Sequence

import torch

from inference.rules import tiling
from inference.rules.region import RegionLogits
from inference.rules.tiling import mirror_combinations, tile_plan

ACCUMULATION_DTYPE = torch.float32
# A fold's network as the sliding window sees it: (B, C, *tile) -> (B, K, *tile) tensors (a torch module).
TileNetwork = Callable[[torch.Tensor], torch.Tensor]


def gaussian_importance(tile_size: Sequence[int], device: torch.device, dtype: torch.dtype,
                        sigma_scale: float = 1 / 8, peak: float = 10.0) -> torch.Tensor:
    """inference.rules.tiling's fp16 importance map as a tensor of `dtype` on `device`."""
    weights = tiling.gaussian_importance(tile_size, sigma_scale, peak)
    return torch.from_numpy(weights).to(device=device, dtype=dtype)


def pad_to_tile(data: torch.Tensor, tile_size: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad (C, X, Y, Z) up to the tile size where smaller, split evenly (extra voxel after).

    Returns the padded tensor and the slices that cut the original region back out of it.
    """
    pads, keep = [], []
    for size, tile in zip(data.shape[1:], tile_size):
        missing = max(tile - size, 0)
        before = missing // 2
        pads.append((before, missing - before))
        keep.append(slice(before, before + size))
    if not any(a or b for a, b in pads):
        return data, tuple(keep)
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last axis first
    return torch.nn.functional.pad(data, flat, mode="constant", value=0.0), tuple(keep)


def mean_over_views(networks: Sequence[TileNetwork], tiles: torch.Tensor,
                    flips: list[tuple[int, ...]]) -> torch.Tensor:
    """Logits of a (B, C, *tile) batch averaged over every fold and every mirrored view of it."""
    views = [()] + list(flips)
    total = None
    for dims in views:
        seen = torch.flip(tiles, dims) if dims else tiles
        for network in networks:
            out = network(seen)
            if dims:
                out = torch.flip(out, dims)
            total = out.float() if total is None else total.add_(out)
    count = len(views) * len(networks)
    return total if count == 1 else total.div_(count)


class WeightedLogitSum:
    """Running Gaussian-weighted sum of tile logits and of the weights, over a (K, *shape) image."""

    def __init__(self, num_classes: int, shape: Sequence[int], tile_size: Sequence[int], device: torch.device,
                 dtype: torch.dtype = ACCUMULATION_DTYPE):
        # dtype: float32 by default; float16 only when a GPU memory budget cannot hold float32 logits
        # (inference.memory.gpu_plan), as nnU-Net's own predictor accumulates on CUDA
        self.logits = torch.zeros((num_classes, *shape), dtype=dtype, device=device)
        self.weights = torch.zeros(tuple(shape), dtype=ACCUMULATION_DTYPE, device=device)
        self.importance = gaussian_importance(tile_size, device, ACCUMULATION_DTYPE)

    def add(self, window: tuple[slice, ...], tile_logits: torch.Tensor) -> None:
        self.logits[(slice(None), *window)] += (tile_logits.to(ACCUMULATION_DTYPE) * self.importance).to(self.logits.dtype)
        self.weights[window] += self.importance

    def mean(self) -> torch.Tensor:
        return self.logits.div_(self.weights)


def _batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@torch.inference_mode()
def predict_logits(data: torch.Tensor, networks: Sequence[TileNetwork], num_classes: int,
                   patch_size: Sequence[int], step_size: float = 0.5,
                   mirror_axes: Sequence[int] | None = None,
                   progress: Callable[[int, int], None] | None = None, *,
                   batch_size: int = 1, autocast_dtype: torch.dtype | None = None,
                   logits_dtype: torch.dtype = ACCUMULATION_DTYPE,
                   region: Sequence[tuple[int, int]] | None = None, grid: str = "whole") -> torch.Tensor | RegionLogits:
    """Logits (K, X, Y, Z), float32 unless `logits_dtype` says otherwise, for a preprocessed (C, X, Y, Z)
    image, on the image's device.

    `batch_size` tiles go through the networks per call; `autocast_dtype` (fp16/bf16) runs them under
    autocast. `progress` gets (tiles done, tiles in all). `region` ([start, stop) per axis of the image):
    run only the tiles of the whole image's grid that meet it (grid "whole") or a grid over it (grid "box":
    inference.rules.tiling.tile_plan), and return RegionLogits of the box they cover.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    device = data.device
    padded, keep = pad_to_tile(data, patch_size)
    plan = tile_plan(padded.shape[1:], keep, patch_size, step_size, region, grid)
    windows = plan.windows
    flips = mirror_combinations(mirror_axes)
    total = WeightedLogitSum(num_classes, plan.covered_shape, patch_size, device, logits_dtype)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    done = 0
    for group in _batches(windows, batch_size):
        # stack copies the tiles into one dense batch (convolutions want contiguous input)
        tiles = torch.stack([padded[(slice(None), *w)] for w in group])
        with autocast:
            logits = mean_over_views(networks, tiles, flips)
        for window, tile_logits in zip(group, logits):
            total.add(plan.local(window), tile_logits)
        done += len(group)
        if progress:
            for i in range(done - len(group) + 1, done + 1):
                progress(i, len(windows))
    logits = total.mean()[(slice(None), *plan.cut)]
    return logits if region is None else RegionLogits(logits, plan.start)
