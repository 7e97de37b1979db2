"""Logits back to a label map on the original grid: resample, argmax, uncrop, transpose back.

The method's change to nnU-Net's export: argmax directly on the (resampled) logits, no softmax, and the
resampling is torch on the device, a few classes at a time when memory is tight.
"""
from __future__ import annotations

import numpy as np
import torch

from inference.model.loading import LoadedModel
from inference.engines.torch_engine.preprocess import Preprocessed
from inference.engines.torch_engine.resample import resample_argmax, separate_axis

# Resampled fp32 logits of all classes at once above this many bytes are produced in class chunks.
_LOGITS_BUDGET_BYTES = 2 * 1024 ** 3


def classes_per_chunk(num_classes: int, shape: tuple[int, ...], device: torch.device) -> int | None:
    """How many classes to resample at once: all, unless that would exceed the memory budget."""
    voxels = int(np.prod(shape))
    budget = _LOGITS_BUDGET_BYTES
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(budget, free // 3)
    per_class = voxels * 4 * 2  # the resampled class and its share of the running max
    if per_class * num_classes <= budget:
        return None
    return max(1, budget // per_class)


def logits_to_segmentation(logits: torch.Tensor, prep: Preprocessed, model: LoadedModel,
                           max_classes: int | None = None) -> np.ndarray:
    """(K, X, Y, Z) logits in the network's grid -> label map (Z, Y, X) uint8 in the input's array order.

    `max_classes` caps the classes resampled at once (a GPU-memory plan's choice); the chunking never
    changes the labels.
    """
    axis = separate_axis(model.config.spacing, prep.spacing, model.config.logits_force_separate_z)
    chunk = classes_per_chunk(logits.shape[0], prep.shape_after_cropping, logits.device)
    if max_classes is not None:
        chunk = min(chunk or logits.shape[0], max_classes)
    labels = resample_argmax(logits, prep.shape_after_cropping, axis, chunk)
    full = torch.zeros(prep.shape_before_cropping, dtype=labels.dtype, device=labels.device)
    full[tuple(slice(a, b) for a, b in prep.bbox)] = labels
    full = full.permute(*model.transpose_backward)
    return full.cpu().numpy()
