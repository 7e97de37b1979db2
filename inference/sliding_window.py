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

import itertools
import math
from contextlib import nullcontext
from typing import Callable, Sequence

import torch

ACCUMULATION_DTYPE = torch.float32
# A fold's network as the sliding window sees it: (B, C, *tile) -> (B, K, *tile). torch modules and
# inference.openvino_network.OpenVINONetwork both are.
TileNetwork = Callable[[torch.Tensor], torch.Tensor]


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


def gaussian_importance(tile_size: Sequence[int], device: torch.device, dtype: torch.dtype,
                        sigma_scale: float = 1 / 8, peak: float = 10.0) -> torch.Tensor:
    """Importance map of one tile: separable Gaussian centred at tile//2, as scipy's gaussian_filter of
    a unit impulse (truncate=4) gives it, scaled to `peak`.

    The map is rounded to fp16 and values that underflow there (tile corners) are lifted to the smallest
    remaining one, as nnU-Net does: that rounding decides how overlapping tiles blend near corners, so it
    is reproduced on every device, then converted to `dtype`.
    """
    profiles = []
    for size in tile_size:
        sigma = size * sigma_scale
        distance = torch.arange(size, dtype=torch.float64) - size // 2
        profile = torch.exp(-0.5 * (distance / sigma) ** 2)
        profile[distance.abs() > int(4.0 * sigma + 0.5)] = 0
        profiles.append(profile)
    weights = profiles[0]
    for profile in profiles[1:]:
        weights = weights[..., None] * profile
    weights = (weights * (peak / weights.max())).to(torch.float16)
    underflow = weights == 0
    if underflow.any():
        weights[underflow] = weights[~underflow].min()
    return weights.to(device=device, dtype=dtype)


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


def mirror_combinations(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """Batched-tensor dims to flip for each extra TTA view: every non-empty subset of the spatial axes
    (shifted past batch and channel), smaller subsets first."""
    dims = [2 + axis for axis in (mirror_axes or ())]
    subsets = [tuple(d for bit, d in enumerate(dims) if mask >> bit & 1) for mask in range(1, 1 << len(dims))]
    return sorted(subsets, key=lambda s: (len(s), [dims.index(d) for d in s]))


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
        # (inference.gpu_memory), as nnU-Net's own predictor accumulates on CUDA
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
                   logits_dtype: torch.dtype = ACCUMULATION_DTYPE) -> torch.Tensor:
    """Logits (K, X, Y, Z), float32 unless `logits_dtype` says otherwise, for a preprocessed (C, X, Y, Z)
    image, on the image's device.

    `batch_size` tiles go through the networks per call; `autocast_dtype` (fp16/bf16) runs torch networks
    under autocast (OpenVINO networks carry their precision in the compiled model). `progress` gets
    (tiles done, tiles in all).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    device = data.device
    padded, keep = pad_to_tile(data, patch_size)
    shape = padded.shape[1:]
    windows = tile_windows(shape, patch_size, step_size)
    flips = mirror_combinations(mirror_axes)
    total = WeightedLogitSum(num_classes, shape, patch_size, device, logits_dtype)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    done = 0
    for group in _batches(windows, batch_size):
        # stack copies the tiles into one dense batch (convolutions want contiguous input)
        tiles = torch.stack([padded[(slice(None), *w)] for w in group])
        with autocast:
            logits = mean_over_views(networks, tiles, flips)
        for window, tile_logits in zip(group, logits):
            total.add(window, tile_logits)
        done += len(group)
        if progress:
            for i in range(done - len(group) + 1, done + 1):
                progress(i, len(windows))
    return total.mean()[(slice(None), *keep)]
