"""Resampling in numpy with PyTorch's interpolation rules (F.interpolate, align_corners=False), and the
export's resample-then-argmax, a slab of output planes at a time.

Written by hand because no maintained library resamples with PyTorch's exact rules (which nnU-Net's
models were planned and trained with) without importing torch. tests/test_host_path.py pins each
function to its torch twin in inference.engines.torch_engine.resample.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Export resamples and argmaxes the logits a slab of output planes (along the first axis) at a time, all
# classes of a slab at once within this many bytes (at least one plane), so the full-resolution logits
# are never held whole (14 classes of a 320x290x72 case would be 374 MB; of a 1024x1024x82 MRI 4.8 GB).
# 8 MB slabs ran as fast as 64 MB ones on the 320x290x72 case, with a tenth of the peak (32 vs 314 MB).
EXPORT_SLAB_BYTES = 8 * 1024 ** 2


def _linear_source(old: int, new: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `new` output positions: the two input indices and the weight of the second, as
    torch's linear interpolation without corner alignment computes them (in float32): source
    coordinate (i + 0.5) * old / new - 0.5, clamped at 0; the upper neighbour clamped at the border."""
    scale = np.float32(old) / np.float32(new)
    source = (np.arange(new, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    source = np.maximum(source, np.float32(0))
    lower = np.minimum(np.floor(source).astype(np.int64), old - 1)
    upper = np.minimum(lower + 1, old - 1)
    weight = np.clip(source - lower.astype(np.float32), 0, 1).astype(np.float32)
    return lower, upper, weight


def _nearest_exact_source(old: int, new: int) -> np.ndarray:
    """torch's 'nearest-exact' input index of each output position: floor((i + 0.5) * old / new), the
    scale in float32 and the product rounded to float32 before the floor, as torch's kernel does."""
    scale = np.float64(np.float32(old) / np.float32(new))
    source = ((np.arange(new, dtype=np.float64) + 0.5) * scale).astype(np.float32)
    return np.minimum(np.floor(source).astype(np.int64), old - 1)


class AxisResampler:
    """Resampling of one axis from `old` to `new` positions, linear or nearest-exact, applied to any
    slice of the output positions (so export can go slab by slab)."""

    def __init__(self, old: int, new: int, nearest: bool):
        self.identity = old == new
        self.nearest = nearest
        if nearest:
            self.lower = _nearest_exact_source(old, new)
        else:
            self.lower, self.upper, self.weight = _linear_source(old, new)

    def __call__(self, data: np.ndarray, axis: int, positions: slice = slice(None), offset: int = 0) -> np.ndarray:
        """The output `positions` along `axis` of `data`, whose first index along it is source position
        `offset` of the whole axis (a sub-box of the logits: inference.rules.region)."""
        if self.identity and positions == slice(None) and offset == 0:
            return data
        lower = self._indices(self.lower, positions, offset, data.shape[axis])
        if self.nearest or self.identity:     # identity: lower is the position itself, weight 0
            return np.take(data, lower, axis=axis)
        shape = [1] * data.ndim
        shape[axis] = -1
        weight = self.weight[positions].reshape(shape)
        low = np.take(data, lower, axis=axis)
        high = np.take(data, self._indices(self.upper, positions, offset, data.shape[axis]), axis=axis)
        # low + w * (high - low) would round differently from torch's (1 - w) * low + w * high
        low *= 1 - weight
        high *= weight
        low += high
        return low

    @staticmethod
    def _indices(source: np.ndarray, positions: slice, offset: int, size: int) -> np.ndarray:
        index = source[positions]
        if offset:
            index = index - offset
        # np.take would wrap a negative index round: a sub-box too small must fail, not mislabel
        if index.size and (index[0] < 0 or index[-1] >= size):
            raise ValueError(f"source positions {index[0] + offset}..{index[-1] + offset} lie outside the "
                             f"logits' {offset}..{offset + size}")
        return index


@dataclass(frozen=True)
class SubBox:
    """Logits that are a sub-box of a whole grid: the whole grid's shape (`source_shape`), where the
    sub-box begins in it (`start`), and the box of output positions wanted ([start, stop) per axis of
    the resampled grid; None: all). The whole grid's index maps give each output voxel exactly as the
    whole-grid export would."""
    source_shape: tuple[int, ...]
    start: tuple[int, ...]
    box: tuple[tuple[int, int], ...] | None


def resamplers(old_shape: Sequence[int], new_shape: Sequence[int], axis: int | None) -> list[AxisResampler]:
    """One AxisResampler per spatial axis: linear, except nearest-exact along the separate `axis`."""
    return [AxisResampler(int(o), int(n), nearest=(a == axis)) for a, (o, n) in enumerate(zip(old_shape, new_shape))]


def resample(data: np.ndarray, new_shape: Sequence[int], axis: int | None) -> np.ndarray:
    """inference.engines.torch_engine.resample.resample in numpy: (C, X, Y, Z) float32 to (C, *new_shape); trilinear, or
    bilinear in the planes across `axis` and nearest-exact along it. Linear interpolation is separable,
    so it runs one axis at a time."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    out = data
    for a, step in enumerate(resamplers(data.shape[1:], new_shape, axis)):
        out = step(out, a + 1)
    return np.ascontiguousarray(out, dtype=np.float32)


def _running_argmax(classes: np.ndarray, out: np.ndarray) -> None:
    """argmax over the first axis into `out` (uint8/int16), first maximal class on ties (torch.argmax's
    rule); a running maximum, since numpy's argmax over a leading axis copies the whole array."""
    best = classes[0].copy()
    out[...] = 0
    for k in range(1, classes.shape[0]):
        better = classes[k] > best
        np.copyto(best, classes[k], where=better)
        np.copyto(out, k, where=better)


def resample_argmax(logits: np.ndarray, new_shape: Sequence[int], axis: int | None,
                    slab: int | None = None, workers: int | None = None, part: SubBox | None = None) -> np.ndarray:
    """argmax over classes of the resampled (K, X, Y, Z) logits, (X, Y, Z) uint8 (int16 past 255 classes).

    Output planes along X are done `slab` at a time (default: as many as EXPORT_SLAB_BYTES hold; every
    class of a slab, then its argmax), by up to `workers` threads (default: the CPUs this process may
    use, at most 4): numpy's loops release the GIL. `part`: only a box of the output, from logits that
    are a sub-box of the whole grid's (SubBox).
    """
    new_shape = tuple(int(s) for s in new_shape)
    if part is None:
        part = SubBox(tuple(logits.shape[1:]), (0,) * len(new_shape), None)
    steps = resamplers(part.source_shape, new_shape, axis)
    positions = [slice(None)] * len(new_shape) if part.box is None else [slice(a, b) for a, b in part.box]
    out_shape = new_shape if part.box is None else tuple(b - a for a, b in part.box)
    plane_bytes = logits.shape[0] * out_shape[1] * out_shape[2] * 4
    slab = slab or max(1, EXPORT_SLAB_BYTES // plane_bytes)
    out = np.empty(out_shape, dtype=np.uint8 if logits.shape[0] <= 256 else np.int16)
    first = positions[0].start or 0

    def one_slab(begin: int) -> None:
        planes = slice(begin, min(begin + slab, out_shape[0]))
        data = steps[0](logits, 1, slice(first + planes.start, first + planes.stop), part.start[0])
        data = steps[1](data, 2, positions[1], part.start[1])
        _running_argmax(steps[2](data, 3, positions[2], part.start[2]), out[planes])

    starts = range(0, out_shape[0], slab)
    workers = workers or min(len(os.sched_getaffinity(0)), 4)
    if workers <= 1:
        for begin in starts:
            one_slab(begin)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one_slab, starts))
    return out
