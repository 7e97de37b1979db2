"""nnU-Net's preprocessing with torch on the compute device (the rules: inference.rules.preprocessing):
transpose, crop to the nonzero box, normalise, resample. For a MIND model the single image becomes its 12
descriptor channels first, on the device."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch

from inference import InferenceError
from inference.engines.torch_engine.resample import resample
from inference.memory.cost import ModelShape, check_grid
from inference.rules.preprocessing import (NORMALIZATION_EPSILON, ChannelNormalization, Preprocessed,
                                           filled_nonzero_mask, nonzero_bbox, normalization_steps, target_shape,
                                           transposed)
from inference.rules.spacing import separate_axis

if TYPE_CHECKING:
    from inference.model.loaded import LoadedModel


def normalize_channel(image: torch.Tensor, step: ChannelNormalization, mask: torch.Tensor | None,
                      source: str) -> torch.Tensor:
    """One channel normalised in place as nnU-Net's scheme does; `mask`: use_mask_for_norm's."""
    eps, properties = NORMALIZATION_EPSILON, step.properties
    if step.scheme == "ZScoreNormalization":
        region = image[mask] if mask is not None else image
        std, mean = torch.std_mean(region, correction=0)  # torch reduces pairwise: float32 is accurate
        mean, std = float(mean), max(float(std), eps)
        if mask is not None:
            image[mask] = (image[mask] - mean) / std
        else:
            image.sub_(mean).div_(std)
    elif step.scheme == "CTNormalization":
        image.clamp_(float(properties["percentile_00_5"]), float(properties["percentile_99_5"]))
        image.sub_(float(properties["mean"])).div_(max(float(properties["std"]), eps))
    elif step.scheme == "RescaleTo01Normalization":
        image.sub_(image.min()).div_(max(float(image.max()), eps))
    elif step.scheme == "RGBTo01Normalization":
        if image.min() < 0 or image.max() > 255:
            raise InferenceError(f"{source}: RGBTo01Normalization expects values in [0, 255]")
        image.div_(255.0)
    return image   # NoNormalization: unchanged


def finite_float32(image: np.ndarray | torch.Tensor, device: torch.device, source: str) -> torch.Tensor:
    """The image as a float32 tensor on `device`, NaN/Inf voxels set to 0 with a warning naming `source`."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    data = image.to(device=device, dtype=torch.float32)
    finite = torch.isfinite(data)
    if not bool(finite.all()):
        warnings.warn(f"{source}: {int((~finite).sum())} NaN/Inf voxels set to 0", stacklevel=3)
        data = torch.where(finite, data, torch.zeros((), device=device))
    return data


def preprocess(image: np.ndarray | torch.Tensor, spacing: tuple[float, ...], model: LoadedModel,
               source: str = "image") -> Preprocessed:
    """image: (C, Z, Y, X) array as read (SimpleITK axis order); spacing in the same axis order."""
    # Before any heavy work: an image that resamples to nothing or to an absurd grid is refused with
    # its spacing named (files were checked before reading already; arrays arrive here directly).
    check_grid(tuple(image.shape[1:]), spacing, ModelShape.of(model), source)
    steps = normalization_steps(model)
    device, tf = model.device, model.transpose_forward
    data = finite_float32(image, device, source)
    if model.mind_params is not None:
        from inference.mind import mind_channels
        data = mind_channels(data, model.mind_params, device).float()
    data = data.permute(0, *[a + 1 for a in tf])
    spacing_t = tuple(float(s) for s in transposed(spacing, tf))
    shape_before = tuple(data.shape[1:])

    nonzero = (data != 0).any(0).cpu().numpy()   # the box and the mask are small host work
    bbox = nonzero_bbox(nonzero)
    crop = tuple(slice(a, b) for a, b in bbox)
    data = data[(slice(None), *crop)].contiguous()
    shape_cropped = tuple(data.shape[1:])
    new_shape = target_shape(shape_cropped, spacing_t, model, source)

    mask = None
    if any(s.use_mask for s in steps):
        mask = torch.from_numpy(filled_nonzero_mask(nonzero[crop])).to(device)
    for c, step in enumerate(steps):
        normalize_channel(data[c], step, mask if step.use_mask else None, str(model.model_dir / "plans.json"))

    cfg = model.config
    data = resample(data, new_shape, separate_axis(spacing_t, cfg.spacing, cfg.data_force_separate_z))
    return Preprocessed(data=data, shape_before_cropping=shape_before, bbox=bbox,
                        shape_after_cropping=shape_cropped, spacing=spacing_t)
