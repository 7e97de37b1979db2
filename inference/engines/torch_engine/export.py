"""Logits back to a label map on the original grid: resample, argmax, uncrop, transpose back.

The method's change to nnU-Net's export: argmax directly on the (resampled) logits, no softmax, and the
resampling is torch on the device, a few classes at a time when memory is tight.
"""
from __future__ import annotations

import numpy as np
import torch

from inference.engines.torch_engine.resample import resample_argmax
from inference.memory.cost import export_classes_per_chunk
from inference.model.loaded import LoadedModel
from inference.rules.preprocessing import Preprocessed
from inference.rules.spacing import separate_axis


def logits_to_segmentation(logits: torch.Tensor, prep: Preprocessed, model: LoadedModel,
                           max_classes: int | None = None) -> np.ndarray:
    """(K, X, Y, Z) logits in the network's grid -> label map (Z, Y, X) uint8 in the input's array order.

    `max_classes` caps the classes resampled at once (a GPU-memory plan's choice); the chunking never
    changes the labels.
    """
    axis = separate_axis(model.config.spacing, prep.spacing, model.config.logits_force_separate_z)
    free = torch.cuda.mem_get_info(logits.device)[0] if logits.device.type == "cuda" else None
    chunk = export_classes_per_chunk(logits.shape[0], int(np.prod(prep.shape_after_cropping)), free)
    if max_classes is not None:
        chunk = min(chunk or logits.shape[0], max_classes)
    labels = resample_argmax(logits, prep.shape_after_cropping, axis, chunk)
    full = torch.zeros(prep.shape_before_cropping, dtype=labels.dtype, device=labels.device)
    full[tuple(slice(a, b) for a, b in prep.bbox)] = labels
    full = full.permute(*model.transpose_backward)
    return full.cpu().numpy()
