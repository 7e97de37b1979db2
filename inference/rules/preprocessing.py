"""nnU-Net's inference preprocessing, as rules both engines follow: the record it produces, the crop to the
nonzero box, the normalisation table, the network grid.

The order is nnunetv2's DefaultPreprocessor's: transpose -> crop to the nonzero box -> normalise ->
resample, so that a model sees what it saw in training. Each engine does the array work in its own
arrays (inference.engines.numpy_engine.preprocess, inference.engines.torch_engine.preprocess); the
decisions are made here, once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from inference import InferenceError
from inference.rules.spacing import new_shape_for_spacing

# `model` below: an inference.model.loaded.LoadedModel (not imported: the rules stand below the model).
# nnU-Net's normalisation schemes this predictor implements (plans: `normalization_schemes`).
SUPPORTED_SCHEMES = ("ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization",
                     "RGBTo01Normalization")
CT_PROPERTIES = ("mean", "std", "percentile_00_5", "percentile_99_5")
NORMALIZATION_EPSILON = 1e-8   # nnU-Net's floor for a standard deviation or a range


@dataclass
class Preprocessed:
    """Network input plus what export needs to go back to the original grid (axes in plans order)."""
    data: Any                                 # (C, X, Y, Z) float32, resampled; the engine's array type
    shape_before_cropping: tuple[int, ...]
    bbox: tuple[tuple[int, int], ...]         # crop box, [start, stop) per axis
    shape_after_cropping: tuple[int, ...]
    spacing: tuple[float, ...]                # the image's spacing


@dataclass(frozen=True)
class ChannelNormalization:
    """How one channel is normalised: the scheme, its intensity properties, and whether the z-score is
    computed inside the filled nonzero mask only (nnU-Net's use_mask_for_norm)."""
    scheme: str
    properties: dict | None
    use_mask: bool


def normalization_steps(model: Any) -> list[ChannelNormalization]:
    """The plans' normalisation per channel, refused up front (naming plans.json) when this predictor
    does not implement a scheme or a CT scheme lacks its intensity statistics."""
    cfg = model.config
    source = model.model_dir / "plans.json"
    steps = []
    for c, scheme in enumerate(cfg.normalization_schemes):
        if scheme not in SUPPORTED_SCHEMES:
            raise InferenceError(f"{source}: normalization scheme '{scheme}' is not supported by this predictor "
                                 f"(supported: ZScore, CT, No, RescaleTo01, RGBTo01)")
        properties = cfg.intensity_properties.get(str(c))
        if scheme == "CTNormalization" and (not properties or any(k not in properties for k in CT_PROPERTIES)):
            raise InferenceError(f"{source}: CTNormalization needs {CT_PROPERTIES} in "
                                 f"foreground_intensity_properties_per_channel")
        steps.append(ChannelNormalization(scheme, properties,
                                          bool(cfg.use_mask_for_norm[c]) and scheme == "ZScoreNormalization"))
    return steps


def mask_bbox(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """Box [start, stop) per axis of the True voxels of `mask`; None when there are none."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def nonzero_bbox(nonzero: np.ndarray) -> tuple[tuple[int, int], ...]:
    """nnU-Net's crop box: the voxels nonzero in any channel (`nonzero`, a boolean mask); the whole image
    when none is. nnU-Net fills holes in this mask first, which cannot change its box."""
    return mask_bbox(nonzero) or tuple((0, s) for s in nonzero.shape)


def filled_nonzero_mask(nonzero: np.ndarray) -> np.ndarray:
    """A boolean nonzero mask with its holes filled, as nnU-Net's normalisation mask."""
    from scipy.ndimage import binary_fill_holes  # only for models with use_mask_for_norm
    return binary_fill_holes(nonzero)


def transposed(values: Sequence, order: Sequence[int]) -> tuple:
    """`values` given per input axis, in the plans' transposed axis order."""
    return tuple(values[a] for a in order)


def target_shape(shape_cropped: tuple[int, ...], spacing_t: tuple[float, ...], model: Any,
                 source: str) -> tuple[int, ...]:
    """The network grid of a cropped image (plans axis order); an InferenceError when it is empty."""
    new_shape = new_shape_for_spacing(shape_cropped, spacing_t, model.config.spacing)
    if min(new_shape) < 1:
        raise InferenceError(f"{source}: its nonzero region, {shape_cropped} voxels at spacing {spacing_t} mm "
                             f"(plans axis order), resamples to a {new_shape} grid at the model's "
                             f"{model.config.spacing} mm: nothing to segment")
    return new_shape
