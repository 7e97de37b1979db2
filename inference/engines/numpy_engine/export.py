"""Logits back to a label map in numpy: resample to the cropped input grid and argmax, a slab at a time
(inference.engines.numpy_engine.resample), then uncrop and transpose back."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from inference.engines.numpy_engine.resample import resample_argmax
from inference.rules.preprocessing import Preprocessed
from inference.rules.spacing import separate_axis

if TYPE_CHECKING:
    from inference.model.loaded import LoadedModel


def logits_to_segmentation(logits: np.ndarray, prep: Preprocessed, model: LoadedModel) -> np.ndarray:
    """(K, X, Y, Z) logits in the network's grid -> label map (Z, Y, X) in the input's array order."""
    axis = separate_axis(model.config.spacing, prep.spacing, model.config.logits_force_separate_z)
    labels = resample_argmax(logits, prep.shape_after_cropping, axis)
    full = np.zeros(prep.shape_before_cropping, dtype=labels.dtype)
    full[tuple(slice(a, b) for a, b in prep.bbox)] = labels
    return full.transpose(model.transpose_backward)
