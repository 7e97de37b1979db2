"""MIND-SSC in numpy, for MIND models on the torch-free CPU path (the CPU image has no torch).

The descriptor is inference.mind's (its docstring defines it; inference.mind_definition holds the offsets,
channel pairs and clamp both implementations share), computed in float32 like the torch version's CPU
default, so the two agree to float32 rounding (tests/test_mind.py). Borders are edge-replicated, so
a slab of output slices plus a halo of dilation + radius slices is computed exactly on its own: slabs
bound the work memory and run on threads (numpy's loops release the GIL).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from inference.mind_definition import CLAMP_HIGH, CLAMP_LOW, NUM_CHANNELS, OFFSETS, PAIRS, check_parameters, patch_weights

# Work memory of one slab: its edge-extended block (and as much again in squared differences and filter
# temporaries) stays within about this many float32 elements, ~32 MB.
SLAB_BLOCK_ELEMENTS = 8 * 1024 ** 2


def _filter_valid(x: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """Valid (unpadded) correlation of `x` with the 1-D weights `w` along `axis`."""
    k = w.size
    n = x.shape[axis] - (k - 1)
    out = None
    for i in range(k):
        part = x[(slice(None),) * axis + (slice(i, i + n),)]
        if out is None:
            out = part * w[i]
        else:
            out += part * w[i]
    return out


def _patch_filter(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable patch filter of (Z, Y, X), valid along all three axes."""
    if w.size == 1:
        return x * w[0]
    for axis in range(3):
        x = _filter_valid(x, w, axis)
    return x


def _slab_distances(img: np.ndarray, z0: int, z1: int, dilation: int, w: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Patch distances of output slices [z0, z1), min over channels subtracted, into out[:, z0:z1];
    returns their per-voxel channel mean (z1-z0, Y, X). Slices beyond the volume are its edge slices."""
    Z, Y, X = img.shape
    r = (w.size - 1) // 2
    h = dilation + r
    rows = np.clip(np.arange(z0 - h, z1 + h), 0, Z - 1)
    block = np.pad(img[rows], ((0, 0), (h, h), (h, h)), mode="edge")
    ez, ey, ex = (z1 - z0) + 2 * r, Y + 2 * r, X + 2 * r

    def shifted(o: tuple[int, int, int]) -> np.ndarray:
        sz, sy, sx = (h - r + dilation * v for v in o)
        return block[sz:sz + ez, sy:sy + ey, sx:sx + ex]

    dist = out[:, z0:z1]
    for k, (i, j) in enumerate(PAIRS):
        diff = shifted(OFFSETS[i]) - shifted(OFFSETS[j])
        np.square(diff, out=diff)
        dist[k] = _patch_filter(diff, w)
    dist -= dist.min(axis=0)
    return dist.mean(axis=0, dtype=np.float32)


def _slab_size(shape: tuple[int, int, int], halo: int) -> int:
    Z, Y, X = shape
    per_slice = (Y + 2 * halo) * (X + 2 * halo)
    return max(1, min(Z, SLAB_BLOCK_ELEMENTS // per_slice - 2 * halo))


def _check(image: np.ndarray, radius: int, dilation: int, patch: str) -> None:
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (Z, Y, X), got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise TypeError(f"image dtype {image.dtype} is not a real intensity type")
    check_parameters(radius, dilation, patch)


def mind_ssc(image: np.ndarray, radius: int = 1, dilation: int = 2, patch: str = "box", sigma: float = 0.8,
             slab: int | None = None, workers: int | None = None) -> np.ndarray:
    """MIND-SSC (12, Z, Y, X) float32 of a (Z, Y, X) image: inference.mind.mind_ssc's values without torch.

    `slab`: output slices per block (default: blocks of about SLAB_BLOCK_ELEMENTS); the result is the
    same for any slab. `workers`: threads (default: the CPUs this process may use, at most 4).
    """
    image = np.asarray(image)
    _check(image, radius, dilation, patch)
    radius, dilation = int(radius), int(dilation)
    Z, Y, X = image.shape
    out = np.empty((NUM_CHANNELS, Z, Y, X), dtype=np.float32)
    mean = float(image.mean(dtype=np.float64))
    if not math.isfinite(mean):
        raise ValueError("image contains non-finite values (NaN or inf)")
    std = math.sqrt(float(np.square(image.astype(np.float64) - mean).mean()))
    if std == 0.0:
        out.fill(1.0)   # constant image: all distances 0, exp(0) = 1
        return out
    img = (image.astype(np.float32) - np.float32(mean)) / np.float32(std)
    w = patch_weights(radius, patch, sigma).astype(np.float32)   # float64, rounded as torch's float32

    # Pass 1: min-subtracted distances into `out`, per-voxel channel mean into `var`.
    step = int(slab) if slab else _slab_size((Z, Y, X), dilation + radius)
    var = np.empty((Z, Y, X), dtype=np.float32)

    def pass1(z0: int) -> None:
        z1 = min(Z, z0 + step)
        var[z0:z1] = _slab_distances(img, z0, z1, dilation, w, out)

    _run(pass1, range(0, Z, step), workers)
    del img
    global_mean = float(var.sum(dtype=np.float64)) / var.size
    if global_mean <= 0.0:   # all 12 distances equal everywhere: no contrast
        out.fill(1.0)
        return out

    # Pass 2: exp(-D / clamp(V)) in place.
    lo, hi = CLAMP_LOW * global_mean, CLAMP_HIGH * global_mean

    def pass2(z0: int) -> None:
        z1 = min(Z, z0 + step)
        v = np.clip(var[z0:z1], np.float32(lo), np.float32(hi))
        block = out[:, z0:z1]
        np.divide(block, v, out=block)
        np.negative(block, out=block)
        np.exp(block, out=block)

    _run(pass2, range(0, Z, step), workers)
    return out


def _run(job, starts, workers: int | None) -> None:
    workers = workers or min(len(os.sched_getaffinity(0)), 4)
    if workers <= 1 or len(starts) <= 1:
        for start in starts:
            job(start)
        return
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(job, starts))


def mind_channels(image: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """The predictor's entry point: a one-channel image (1, Z, Y, X) -> its 12 MIND channels
    (12, Z, Y, X) float32; `params` from inference.mind_definition.descriptor_channels_from_dataset_json."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"a MIND model takes one input channel (1, Z, Y, X), got shape {image.shape}")
    return mind_ssc(image[0], **params)
