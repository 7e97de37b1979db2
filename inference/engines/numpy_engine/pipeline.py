"""The CPU path without torch: numpy arrays through an OpenVINO network, from image to label map.

Models on the OpenVINO backend (inference.engines.choice) take this path. On the 2-core CPU of our benchmarks,
importing torch costs about 2 s of start-up and 450 MB of resident memory, more than the whole network
stage of a typical MRI case saves by running in OpenVINO; without torch the OpenVINO path starts faster
and peaks lower than the torch path (benchmarks/results/compare_nnunet_*.md).

Every rule is the torch path's, which documents it and its nnU-Net origin: preprocessing as in
inference.engines.torch_engine.preprocess (transpose -> crop to nonzero -> normalise -> resample), tiles and their Gaussian
weights from inference.rules.tiling (shared with inference.engines.torch_engine.sliding_window), export as in inference.engines.torch_engine.export
(resample the logits, argmax, uncrop, transpose back). Numbers agree with the torch path to float32
rounding, not bit for bit: tests/test_host_path.py checks each step against the torch step and the whole
case against `--backend torch`.

Written by hand because no maintained library resamples with PyTorch's exact interpolation rules (which
nnU-Net's models were planned and trained with) without importing torch.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from inference import InferenceError
from inference.memory.cost import ModelShape, check_grid
from inference.model.loading import LoadedModel
from inference.engines.torch_engine.preprocess import Preprocessed, filled_nonzero_mask, target_shape
from inference.rules.spacing import separate_axis
from inference.rules.tiling import gaussian_importance, mirror_combinations, tile_windows
from inference.timings import StageTimer

# Export resamples and argmaxes the logits a slab of output planes (along the first axis) at a time, all
# classes of a slab at once within this many bytes (at least one plane), so the full-resolution logits
# are never held whole (14 classes of a 320x290x72 case would be 374 MB; of a 1024x1024x82 MRI 4.8 GB).
# 8 MB slabs ran as fast as 64 MB ones on the 320x290x72 case, with a tenth of the peak (32 vs 314 MB).
EXPORT_SLAB_BYTES = 8 * 1024 ** 2


# ---- resampling with torch's rules (F.interpolate, align_corners=False) ----------------------------

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

    def __call__(self, data: np.ndarray, axis: int, positions: slice = slice(None)) -> np.ndarray:
        if self.identity and positions == slice(None):
            return data
        lower = self.lower[positions]
        if self.nearest:
            return np.take(data, lower, axis=axis)
        shape = [1] * data.ndim
        shape[axis] = -1
        weight = self.weight[positions].reshape(shape)
        low = np.take(data, lower, axis=axis)
        high = np.take(data, self.upper[positions], axis=axis)
        # low + w * (high - low) would round differently from torch's (1 - w) * low + w * high
        low *= 1 - weight
        high *= weight
        low += high
        return low


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
                    slab: int | None = None, workers: int | None = None) -> np.ndarray:
    """argmax over classes of the resampled (K, X, Y, Z) logits, (X, Y, Z) uint8 (int16 past 255 classes).

    Output planes along X are done `slab` at a time (default: as many as EXPORT_SLAB_BYTES hold; every
    class of a slab, then its argmax), by up to `workers` threads (default: the CPUs this process may
    use, at most 4): numpy's loops release the GIL.
    """
    new_shape = tuple(int(s) for s in new_shape)
    plane_bytes = logits.shape[0] * new_shape[1] * new_shape[2] * 4
    slab = slab or max(1, EXPORT_SLAB_BYTES // plane_bytes)
    steps = resamplers(logits.shape[1:], new_shape, axis)
    out = np.empty(new_shape, dtype=np.uint8 if logits.shape[0] <= 256 else np.int16)

    def one_slab(start: int) -> None:
        planes = slice(start, min(start + slab, new_shape[0]))
        part = steps[0](logits, 1, planes)
        part = steps[2](steps[1](part, 2), 3)
        _running_argmax(part, out[planes])

    starts = range(0, new_shape[0], slab)
    workers = workers or min(len(os.sched_getaffinity(0)), 4)
    if workers <= 1:
        for start in starts:
            one_slab(start)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one_slab, starts))
    return out


# ---- preprocessing (inference.engines.torch_engine.preprocess's rules) ---------------------------------------------------

def nonzero_bbox(data: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Box [start, stop) per spatial axis of voxels nonzero in any channel; the whole image if none."""
    mask = (data != 0).any(0)
    bbox = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return tuple((0, s) for s in mask.shape)
        bbox.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(bbox)


def normalize_channel(image: np.ndarray, scheme: str, properties: dict | None, mask: np.ndarray | None,
                      source: str) -> None:
    """One float32 channel normalised in place, as inference.engines.torch_engine.preprocess.normalize_channel does."""
    eps = 1e-8
    if scheme == "ZScoreNormalization":
        region = image[mask] if mask is not None else image
        # float64 sums: as accurate as torch's float32 pairwise reduction, or more
        mean, std = float(region.mean(dtype=np.float64)), max(float(region.std(dtype=np.float64)), eps)
        if mask is not None:
            image[mask] = (image[mask] - np.float32(mean)) / np.float32(std)
        else:
            image -= np.float32(mean)
            image /= np.float32(std)
    elif scheme == "CTNormalization":
        needed = ("mean", "std", "percentile_00_5", "percentile_99_5")
        if not properties or any(k not in properties for k in needed):
            raise InferenceError(f"{source}: CTNormalization needs {needed} in "
                                 f"foreground_intensity_properties_per_channel")
        np.clip(image, float(properties["percentile_00_5"]), float(properties["percentile_99_5"]), out=image)
        image -= np.float32(properties["mean"])
        image /= np.float32(max(float(properties["std"]), eps))
    elif scheme == "NoNormalization":
        pass
    elif scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= np.float32(max(float(image.max()), eps))
    elif scheme == "RGBTo01Normalization":
        if image.min() < 0 or image.max() > 255:
            raise InferenceError(f"{source}: RGBTo01Normalization expects values in [0, 255]")
        image /= np.float32(255.0)
    else:
        raise InferenceError(f"{source}: normalization scheme '{scheme}' is not supported by this predictor "
                             f"(supported: ZScore, CT, No, RescaleTo01, RGBTo01)")


def preprocess(image: np.ndarray, spacing: tuple[float, ...], model: LoadedModel,
               source: str = "image") -> Preprocessed:
    """inference.engines.torch_engine.preprocess.preprocess in numpy: image (C, Z, Y, X) as read, spacing in that order."""
    check_grid(tuple(image.shape[1:]), spacing, ModelShape.of(model), source)
    tf = model.transpose_forward
    data = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        warnings.warn(f"{source}: {int((~finite).sum())} NaN/Inf voxels set to 0", stacklevel=2)
        data = np.where(finite, data, np.float32(0))
    del finite
    if model.mind_params is not None:   # the 12 MIND-SSC channels, in numpy (no torch on this path)
        from inference.engines.numpy_engine.mind import mind_channels
        data = mind_channels(data, model.mind_params)
    data = data.transpose(0, *[a + 1 for a in tf])
    spacing_t = tuple(float(spacing[a]) for a in tf)
    shape_before = tuple(data.shape[1:])

    bbox = nonzero_bbox(data)
    # always a copy, normalised in place below: the caller's array is never changed
    data = np.array(data[(slice(None), *[slice(a, b) for a, b in bbox])], dtype=np.float32, order="C")
    shape_cropped = tuple(data.shape[1:])

    cfg = model.config
    new_shape = target_shape(shape_cropped, spacing_t, model, source)
    plans_source = str(model.model_dir / "plans.json")
    mask = filled_nonzero_mask((data != 0).any(0)) if any(cfg.use_mask_for_norm) else None
    for c, scheme in enumerate(cfg.normalization_schemes):
        use_mask = mask if cfg.use_mask_for_norm[c] and scheme == "ZScoreNormalization" else None
        normalize_channel(data[c], scheme, cfg.intensity_properties.get(str(c)), use_mask, plans_source)

    data = resample(data, new_shape, separate_axis(spacing_t, cfg.spacing, cfg.data_force_separate_z))
    return Preprocessed(data=data, shape_before_cropping=shape_before, bbox=bbox,
                        shape_after_cropping=shape_cropped, spacing=spacing_t)


# ---- sliding window (inference.engines.torch_engine.sliding_window's rules) ----------------------------------------------

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
                   progress: Callable[[int, int], None] | None = None, batch_size: int = 1) -> np.ndarray:
    """inference.engines.torch_engine.sliding_window.predict_logits in numpy: (K, X, Y, Z) float32 logits of a (C, X, Y, Z)
    image, each voxel the Gaussian-weighted mean of its tiles' logits (accumulated in float32)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    padded, keep = pad_to_tile(data, patch_size)
    shape = padded.shape[1:]
    windows = tile_windows(shape, patch_size, step_size)
    flips = mirror_combinations(mirror_axes)
    importance = gaussian_importance(patch_size).astype(np.float32)
    logits = np.zeros((num_classes, *shape), dtype=np.float32)
    weights = np.zeros(shape, dtype=np.float32)
    for first in range(0, len(windows), batch_size):
        group = windows[first:first + batch_size]
        tiles = np.stack([padded[(slice(None), *w)] for w in group])
        for window, tile_logits in zip(group, mean_over_views(networks, tiles, flips)):
            tile_logits *= importance
            logits[(slice(None), *window)] += tile_logits
            weights[window] += importance
        if progress:
            for done in range(first + 1, first + len(group) + 1):
                progress(done, len(windows))
    logits /= weights
    return logits[(slice(None), *keep)]


# ---- export (inference.engines.torch_engine.export's rules) and the whole case --------------------------------------------

def logits_to_segmentation(logits: np.ndarray, prep: Preprocessed, model: LoadedModel) -> np.ndarray:
    """(K, X, Y, Z) logits in the network's grid -> label map (Z, Y, X) in the input's array order."""
    axis = separate_axis(model.config.spacing, prep.spacing, model.config.logits_force_separate_z)
    labels = resample_argmax(logits, prep.shape_after_cropping, axis)
    full = np.zeros(prep.shape_before_cropping, dtype=labels.dtype)
    full[tuple(slice(a, b) for a, b in prep.bbox)] = labels
    return full.transpose(model.transpose_backward)


def segment_array(image: np.ndarray, spacing: tuple[float, ...], model: LoadedModel, *, tta: bool = False,
                  step_size: float = 0.5, timer: StageTimer | None = None,
                  progress: Callable[[int, int], None] | None = None, source: str = "image",
                  direction: tuple[float, ...] | None = None) -> np.ndarray:
    """inference.api.segment_array for a model on the OpenVINO backend: the label map (Z, Y, X) uint8.
    `direction`: the image's SimpleITK direction cosines, for the ROI's cranio-caudal axis (None: axial)."""
    timer = timer or StageTimer()
    if model.localizer is not None:   # ROI-first: localise, then this function on the box only
        from inference.roi import segment_with_roi
        return segment_with_roi(np.asarray(image), model, lambda img, m: segment_array(
            img, spacing, m, tta=tta, step_size=step_size, timer=timer, progress=progress, source=source),
            timer, spacing=spacing, direction=direction)
    with timer.stage("preprocess"):
        prep = preprocess(np.asarray(image), spacing, model, source)
    with timer.stage("network"):
        logits = predict_logits(prep.data, model.networks, model.num_classes, model.config.patch_size, step_size,
                                model.mirror_axes if tta else None, progress, model.plan.batch_size)
        prep.data = None   # the network input is no longer needed
    with timer.stage("export"):
        return logits_to_segmentation(logits, prep, model)
