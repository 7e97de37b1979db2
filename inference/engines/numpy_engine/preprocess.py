"""nnU-Net's preprocessing in numpy (the rules: inference.rules.preprocessing): transpose, crop to the
nonzero box, normalise, resample. Numbers agree with the torch engine's to float32 rounding
(tests/test_host_path.py)."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from inference import InferenceError
from inference.engines.numpy_engine.resample import resample
from inference.memory.cost import ModelShape, check_grid
from inference.rules.preprocessing import (NORMALIZATION_EPSILON, ChannelNormalization, Preprocessed,
                                           filled_nonzero_mask, nonzero_bbox, normalization_steps, target_shape,
                                           transposed)
from inference.rules.spacing import separate_axis

if TYPE_CHECKING:
    from inference.model.loaded import LoadedModel


STATS_CHUNK = 1 << 18     # voxels per step of mean_and_std: 2 MiB of float64, cache-sized


def mean_and_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and population standard deviation of float32 values, summed in float64 (as accurate as
    torch's float32 pairwise reduction, or more), two passes over chunks. numpy's std(dtype=float64)
    gives the same float32 values but makes full-size float64 temporaries: about 3x slower on a
    27 M-voxel image, and z-scoring runs on every case (twice with a localiser)."""
    flat = values.reshape(-1)
    count = flat.size
    if count == 0:
        return 0.0, 0.0
    mean = sum(float(np.add.reduce(flat[i:i + STATS_CHUNK], dtype=np.float64))
               for i in range(0, count, STATS_CHUNK)) / count
    squares, centred = 0.0, np.empty(min(STATS_CHUNK, count), dtype=np.float64)
    for i in range(0, count, STATS_CHUNK):
        part = flat[i:i + STATS_CHUNK]
        np.subtract(part, mean, out=centred[:part.size], dtype=np.float64)
        squares += float(np.dot(centred[:part.size], centred[:part.size]))
    return mean, math.sqrt(squares / count)


def normalize_channel(image: np.ndarray, step: ChannelNormalization, mask: np.ndarray | None,
                      source: str) -> None:
    """One float32 channel normalised in place as nnU-Net's scheme does; `mask`: use_mask_for_norm's."""
    eps, properties = NORMALIZATION_EPSILON, step.properties
    if step.scheme == "ZScoreNormalization":
        mean, std = mean_and_std(image[mask] if mask is not None else image)
        std = max(std, eps)
        if mask is not None:
            image[mask] = (image[mask] - np.float32(mean)) / np.float32(std)
        else:
            image -= np.float32(mean)
            image /= np.float32(std)
    elif step.scheme == "CTNormalization":
        np.clip(image, float(properties["percentile_00_5"]), float(properties["percentile_99_5"]), out=image)
        image -= np.float32(properties["mean"])
        image /= np.float32(max(float(properties["std"]), eps))
    elif step.scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= np.float32(max(float(image.max()), eps))
    elif step.scheme == "RGBTo01Normalization":
        if image.min() < 0 or image.max() > 255:
            raise InferenceError(f"{source}: RGBTo01Normalization expects values in [0, 255]")
        image /= np.float32(255.0)
    # NoNormalization: nothing to do


def finite_float32(image: np.ndarray, source: str) -> np.ndarray:
    """The image as float32 with NaN/Inf voxels set to 0, with a warning naming `source`."""
    data = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        warnings.warn(f"{source}: {int((~finite).sum())} NaN/Inf voxels set to 0", stacklevel=3)
        data = np.where(finite, data, np.float32(0))
    return data


def mind_descriptors(data: np.ndarray, model: LoadedModel) -> np.ndarray:
    """The 12 MIND-SSC channels of a MIND model's single image, in numpy (no torch on this engine)."""
    from inference.engines.numpy_engine.mind import mind_channels
    return mind_channels(data, model.mind_params)


@dataclass(frozen=True)
class NormalisedCrop:
    """An image after the steps before resampling: transposed, cropped to the nonzero box, normalised
    (float32, C-contiguous; never changed after it is made, so two models may share it)."""
    data: np.ndarray
    bbox: list
    shape_before: tuple[int, ...]
    spacing: tuple[float, ...]


def sharing_key(model: LoadedModel, steps) -> tuple:
    """What the normalised crop depends on besides the image: the axis order, the MIND descriptors and
    each channel's effective normalisation (z-score ignores the intensity statistics; CT uses them)."""
    norm = tuple((s.scheme, s.use_mask, tuple(sorted(s.properties.items()))
                  if s.scheme == "CTNormalization" else None) for s in steps)
    return tuple(model.transpose_forward), repr(model.mind_params), norm


def normalised_crop(image: np.ndarray, spacing: tuple[float, ...], model: LoadedModel, steps,
                    source: str) -> NormalisedCrop:
    tf = model.transpose_forward
    data = finite_float32(image, source)
    if model.mind_params is not None:
        data = mind_descriptors(data, model)
    data = data.transpose(0, *[a + 1 for a in tf])
    spacing_t = tuple(float(s) for s in transposed(spacing, tf))
    shape_before = tuple(data.shape[1:])
    bbox = nonzero_bbox((data != 0).any(0))
    # always a copy, normalised in place below: the caller's array is never changed
    data = np.array(data[(slice(None), *[slice(a, b) for a, b in bbox])], dtype=np.float32, order="C")
    mask = filled_nonzero_mask((data != 0).any(0)) if any(s.use_mask for s in steps) else None
    for c, step in enumerate(steps):
        normalize_channel(data[c], step, mask if step.use_mask else None, str(model.model_dir / "plans.json"))
    data.flags.writeable = False
    return NormalisedCrop(data, bbox, shape_before, spacing_t)


def preprocess(image: np.ndarray, spacing: tuple[float, ...], model: LoadedModel,
               source: str = "image", shared: dict | None = None) -> Preprocessed:
    """Image (C, Z, Y, X) as read, spacing in that order -> the network input (plans axis order).

    `shared`: a memo for one image (inference.api makes one per case): a localiser and the model whose
    crops are the same (same axis order and effective normalisation) crop and normalise it once."""
    check_grid(tuple(image.shape[1:]), spacing, ModelShape.of(model), source)
    steps = normalization_steps(model)
    key = sharing_key(model, steps)
    crop = shared.get(key) if shared is not None else None
    if crop is None:
        crop = normalised_crop(image, spacing, model, steps, source)
        if shared is not None:
            shared[key] = crop
    shape_cropped = tuple(crop.data.shape[1:])
    new_shape = target_shape(shape_cropped, crop.spacing, model, source)
    cfg = model.config
    data = resample(crop.data, new_shape, separate_axis(crop.spacing, cfg.spacing, cfg.data_force_separate_z))
    return Preprocessed(data=data, shape_before_cropping=crop.shape_before, bbox=crop.bbox,
                        shape_after_cropping=shape_cropped, spacing=crop.spacing)
