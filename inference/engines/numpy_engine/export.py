"""Logits back to a label map in numpy: resample to the cropped input grid and argmax, a slab at a time
(inference.engines.numpy_engine.resample), then uncrop and transpose back."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from inference.engines.numpy_engine.resample import SubBox, resample_argmax
from inference.rules.preprocessing import Preprocessed
from inference.rules.region import Region, RegionLogits
from inference.rules.spacing import separate_axis

if TYPE_CHECKING:
    from inference.model.loaded import LoadedModel


def logits_to_segmentation(logits: np.ndarray | RegionLogits, prep: Preprocessed, model: LoadedModel,
                           region: Region | None = None) -> np.ndarray:
    """(K, X, Y, Z) logits in the network's grid -> label map (Z, Y, X) in the input's array order.

    With a `region`, `logits` are the RegionLogits of the tiles run for it: only the region's box is
    labelled (with the whole grid's index maps, so exactly as the whole export labels it), the rest is
    background."""
    axis = separate_axis(model.config.spacing, prep.spacing, model.config.logits_force_separate_z)
    if region is None:
        labels, box = resample_argmax(logits, prep.shape_after_cropping, axis), None
    else:
        part = SubBox(region.network_shape, logits.start, region.cropped)
        labels, box = resample_argmax(logits.data, prep.shape_after_cropping, axis, part=part), region.cropped
    full = np.zeros(prep.shape_before_cropping, dtype=labels.dtype)
    inner = box or tuple((0, b - a) for a, b in prep.bbox)
    full[tuple(slice(a + lo, a + hi) for (a, _), (lo, hi) in zip(prep.bbox, inner))] = labels
    return full.transpose(model.transpose_backward)
