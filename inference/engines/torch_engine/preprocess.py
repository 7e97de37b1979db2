"""nnU-Net's inference preprocessing on the compute device: transpose, crop to nonzero, normalise, resample.

The order (transpose -> crop -> normalise -> resample) and every rule follow nnunetv2's
DefaultPreprocessor so that a model sees what it saw in training. inference.engines.numpy_engine.pipeline does the same in numpy
for the OpenVINO path; torch is imported inside the torch functions here, so that `Preprocessed` and
`target_shape` are shared without loading it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from inference import InferenceError
from inference.memory.cost import ModelShape, check_grid
from inference.model.loading import LoadedModel
from inference.rules.spacing import new_shape_for_spacing, separate_axis

if TYPE_CHECKING:
    import torch


@dataclass
class Preprocessed:
    """Network input plus what export needs to go back to the original grid."""
    data: torch.Tensor | np.ndarray          # (C, X, Y, Z) float32, resampled, on the device (numpy: host)
    shape_before_cropping: tuple[int, ...]   # transposed axes
    bbox: tuple[tuple[int, int], ...]        # crop box in transposed axes, [start, stop)
    shape_after_cropping: tuple[int, ...]
    spacing: tuple[float, ...]               # original spacing, transposed


def nonzero_bbox(data: torch.Tensor) -> tuple[tuple[int, int], ...]:
    """Bounding box [start, stop) per axis of voxels nonzero in any channel; whole image if none.

    nnU-Net fills holes in this mask first, which cannot change its bounding box.
    """
    import torch
    mask = (data != 0).any(0)
    bbox = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = torch.nonzero(mask.any(dim=other)).flatten()
        if hits.numel() == 0:
            return tuple((0, s) for s in mask.shape)
        bbox.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(bbox)


def _filled_nonzero_mask(data: torch.Tensor) -> torch.Tensor:
    """nnU-Net's normalisation mask: nonzero in any channel, holes filled (scipy, on the host)."""
    import torch
    mask = filled_nonzero_mask((data != 0).any(0).cpu().numpy())
    return torch.from_numpy(mask).to(data.device)


def filled_nonzero_mask(nonzero: np.ndarray) -> np.ndarray:
    """A boolean nonzero mask with its holes filled, as nnU-Net's normalisation mask."""
    from scipy.ndimage import binary_fill_holes  # only for models with use_mask_for_norm
    return binary_fill_holes(nonzero)


def normalize_channel(image: torch.Tensor, scheme: str, properties: dict | None,
                      mask: torch.Tensor | None, source: str) -> torch.Tensor:
    """One channel normalised in place as nnU-Net's scheme `scheme` does; `mask` for use_mask_for_norm."""
    import torch
    eps = 1e-8
    if scheme == "ZScoreNormalization":
        region = image[mask] if mask is not None else image
        std, mean = torch.std_mean(region, correction=0)  # torch reduces pairwise: float32 is accurate
        mean, std = float(mean), max(float(std), eps)
        if mask is not None:
            image[mask] = (image[mask] - mean) / std
        else:
            image.sub_(mean).div_(std)
    elif scheme == "CTNormalization":
        needed = ("mean", "std", "percentile_00_5", "percentile_99_5")
        if not properties or any(k not in properties for k in needed):
            raise InferenceError(f"{source}: CTNormalization needs {needed} in "
                                 f"foreground_intensity_properties_per_channel")
        image.clamp_(float(properties["percentile_00_5"]), float(properties["percentile_99_5"]))
        image.sub_(float(properties["mean"])).div_(max(float(properties["std"]), eps))
    elif scheme == "NoNormalization":
        pass
    elif scheme == "RescaleTo01Normalization":
        image.sub_(image.min()).div_(max(float(image.max()), eps))
    elif scheme == "RGBTo01Normalization":
        if image.min() < 0 or image.max() > 255:
            raise InferenceError(f"{source}: RGBTo01Normalization expects values in [0, 255]")
        image.div_(255.0)
    else:
        raise InferenceError(f"{source}: normalization scheme '{scheme}' is not supported by this predictor "
                             f"(supported: ZScore, CT, No, RescaleTo01, RGBTo01)")
    return image


def preprocess(image: np.ndarray | torch.Tensor, spacing: tuple[float, ...], model: LoadedModel,
               source: str = "image") -> Preprocessed:
    """image: (C, Z, Y, X) array as read (SimpleITK axis order); spacing in the same axis order.

    NaN/Inf voxels are set to 0 with a warning naming `source`, and the case is still segmented. For a
    MIND model the single image becomes its 12 descriptor channels first, on the device.
    """
    import torch

    from inference.engines.torch_engine.resample import resample
    # Before any heavy work: an image that resamples to nothing or to an absurd grid is refused with
    # its spacing named (files were checked before reading already; arrays arrive here directly).
    check_grid(tuple(image.shape[1:]), spacing, ModelShape.of(model), source)
    device = model.device
    tf = model.transpose_forward
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    data = image.to(device=device, dtype=torch.float32)
    finite = torch.isfinite(data)
    if not bool(finite.all()):
        warnings.warn(f"{source}: {int((~finite).sum())} NaN/Inf voxels set to 0", stacklevel=2)
        data = torch.where(finite, data, torch.zeros((), device=device))
    del finite
    if model.mind_params is not None:
        from inference.mind import mind_channels
        data = mind_channels(data, model.mind_params, device).float()
    data = data.permute(0, *[a + 1 for a in tf])
    spacing_t = tuple(float(spacing[a]) for a in tf)
    shape_before = tuple(data.shape[1:])

    bbox = nonzero_bbox(data)
    data = data[(slice(None), *[slice(a, b) for a, b in bbox])].contiguous()
    shape_cropped = tuple(data.shape[1:])

    cfg = model.config
    new_shape = target_shape(shape_cropped, spacing_t, model, source)
    plans_source = str(model.model_dir / "plans.json")
    mask = _filled_nonzero_mask(data) if any(cfg.use_mask_for_norm) else None
    for c, scheme in enumerate(cfg.normalization_schemes):
        use_mask = mask if cfg.use_mask_for_norm[c] and scheme == "ZScoreNormalization" else None
        normalize_channel(data[c], scheme, cfg.intensity_properties.get(str(c)), use_mask, plans_source)

    axis = separate_axis(spacing_t, cfg.spacing, cfg.data_force_separate_z)
    data = resample(data, new_shape, axis)
    return Preprocessed(data=data, shape_before_cropping=shape_before, bbox=bbox,
                        shape_after_cropping=shape_cropped, spacing=spacing_t)


def target_shape(shape_cropped: tuple[int, ...], spacing_t: tuple[float, ...], model: LoadedModel,
                 source: str) -> tuple[int, ...]:
    """The network grid of a cropped image (plans axis order); an InferenceError when it is empty."""
    new_shape = new_shape_for_spacing(shape_cropped, spacing_t, model.config.spacing)
    if min(new_shape) < 1:
        raise InferenceError(f"{source}: its nonzero region, {shape_cropped} voxels at spacing {spacing_t} mm "
                             f"(plans axis order), resamples to a {new_shape} grid at the model's "
                             f"{model.config.spacing} mm: nothing to segment")
    return new_shape
