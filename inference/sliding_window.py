"""Sliding-window prediction with nnU-Net's tile positions and Gaussian importance weighting.

Tile positions, the Gaussian (sigma = patch/8, truncated at 4 sigma, peak 10, zeros lifted to the
smallest positive value), zero-padding of images smaller than the patch and mirroring TTA all follow
nnunetv2's predictor, so results agree with it. The difference: logits stay on the compute device,
and every fold's network runs on each tile (an ensemble needs one pass over the tiles, not one per fold).
"""
from __future__ import annotations

import itertools
import math
from contextlib import nullcontext
from typing import Callable, Sequence

import torch


def tile_starts(image_size: Sequence[int], tile_size: Sequence[int], step_size: float) -> list[list[int]]:
    """Start index of every tile along each axis: evenly spread, at most step_size * tile apart."""
    if not 0 < step_size <= 1:
        raise ValueError(f"step size must be in (0, 1], got {step_size}")
    starts = []
    for size, tile in zip(image_size, tile_size):
        if size < tile:
            raise ValueError(f"image size {tuple(image_size)} smaller than tile {tuple(tile_size)}")
        n_steps = int(math.ceil((size - tile) / (tile * step_size))) + 1
        if n_steps == 1:
            starts.append([0])
            continue
        stride = (size - tile) / (n_steps - 1)
        starts.append([int(round(stride * i)) for i in range(n_steps)])
    return starts


def gaussian_importance(tile_size: Sequence[int], device: torch.device, dtype: torch.dtype,
                        sigma_scale: float = 1 / 8, peak: float = 10.0) -> torch.Tensor:
    """Importance map of one tile: separable Gaussian centred at tile//2, as scipy's gaussian_filter of
    a unit impulse (truncate=4) gives it, scaled to `peak`.

    Like nnU-Net, the map is rounded to fp16 and values that underflow there (tile corners) are lifted
    to the smallest remaining one: that rounding decides how overlapping tiles are blended near
    corners, so we reproduce it on every device, then convert to `dtype`.
    """
    weights = None
    for size in tile_size:
        sigma = size * sigma_scale
        radius = int(4.0 * sigma + 0.5)
        offset = torch.arange(size, dtype=torch.float64) - size // 2
        w = torch.exp(-0.5 * (offset / sigma) ** 2)
        w[offset.abs() > radius] = 0
        weights = w if weights is None else weights[..., None] * w
    weights = (weights / weights.max() * peak).to(torch.float16)
    zero = weights == 0
    if zero.any():
        weights[zero] = weights[~zero].min()
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
    """Tensor dims to flip for each TTA pass (spatial axes shifted past batch and channel)."""
    if not mirror_axes:
        return []
    dims = [a + 2 for a in mirror_axes]
    return [c for k in range(1, len(dims) + 1) for c in itertools.combinations(dims, k)]


def predict_tile(networks: Sequence[torch.nn.Module], tile: torch.Tensor,
                 flips: list[tuple[int, ...]]) -> torch.Tensor:
    """Mean logits over folds and mirrorings for one (1, C, *patch) tile -> (K, *patch)."""
    total = None
    for network in networks:
        out = network(tile)
        for dims in flips:
            out += torch.flip(network(torch.flip(tile, dims)), dims)
        total = out if total is None else total.add_(out)
    passes = len(networks) * (len(flips) + 1)
    return total[0] if passes == 1 else total[0].div_(passes)


@torch.inference_mode()
def predict_logits(data: torch.Tensor, networks: Sequence[torch.nn.Module], num_classes: int,
                   patch_size: Sequence[int], step_size: float = 0.5,
                   mirror_axes: Sequence[int] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Logits (K, X, Y, Z) for a preprocessed (C, X, Y, Z) image, on the image's device.

    On CUDA the network runs under fp16 autocast and logits accumulate in fp16 (as nnU-Net does);
    on CPU everything is fp32.
    """
    device = data.device
    on_cuda = device.type == "cuda"
    acc_dtype = torch.float16 if on_cuda else torch.float32
    padded, keep = pad_to_tile(data, patch_size)
    shape = padded.shape[1:]
    starts = tile_starts(shape, patch_size, step_size)
    positions = list(itertools.product(*starts))
    flips = mirror_combinations(mirror_axes)

    logits = torch.zeros((num_classes, *shape), dtype=acc_dtype, device=device)
    weight_sum = torch.zeros(shape, dtype=acc_dtype, device=device)
    gaussian = gaussian_importance(patch_size, device, acc_dtype)
    autocast = torch.autocast("cuda", dtype=torch.float16) if on_cuda else nullcontext()
    with autocast:
        for i, start in enumerate(positions):
            window = tuple(slice(s, s + p) for s, p in zip(start, patch_size))
            tile = padded[(slice(None), *window)][None].contiguous()  # convolutions want dense input
            prediction = predict_tile(networks, tile, flips).to(acc_dtype)
            prediction *= gaussian
            logits[(slice(None), *window)] += prediction
            weight_sum[window] += gaussian
            if progress:
                progress(i + 1, len(positions))
    logits /= weight_sum
    if torch.isinf(logits).any():
        raise RuntimeError("infinite logits after accumulation (fp16 overflow)")
    return logits[(slice(None), *keep)]

