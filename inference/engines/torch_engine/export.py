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
from inference.rules.region import Region, RegionLogits
from inference.rules.spacing import separate_axis


def logits_to_segmentation(logits: torch.Tensor | RegionLogits, prep: Preprocessed, model: LoadedModel,
                           max_classes: int | None = None, region: Region | None = None) -> np.ndarray:
    """(K, X, Y, Z) logits in the network's grid -> label map (Z, Y, X) uint8 in the input's array order.

    `max_classes` caps the classes resampled at once (a GPU-memory plan's choice); the chunking never
    changes the labels. With a `region`, `logits` are its RegionLogits: labels inside `region.box`, 0
    outside.
    """
    if region is not None:
        logits = whole_grid(logits, region)
    axis = separate_axis(model.config.spacing, prep.spacing, model.config.logits_force_separate_z)
    free = torch.cuda.mem_get_info(logits.device)[0] if logits.device.type == "cuda" else None
    chunk = export_classes_per_chunk(logits.shape[0], int(np.prod(prep.shape_after_cropping)), free)
    if max_classes is not None:
        chunk = min(chunk or logits.shape[0], max_classes)
    labels = resample_argmax(logits, prep.shape_after_cropping, axis, chunk)
    full = torch.zeros(prep.shape_before_cropping, dtype=labels.dtype, device=labels.device)
    full[tuple(slice(a, b) for a, b in prep.bbox)] = labels
    full = full.permute(*model.transpose_backward).cpu().numpy()
    if region is None:
        return full
    inside = tuple(slice(a, b) for a, b in region.box)
    out = np.zeros_like(full)
    out[inside] = full[inside]
    return out


def whole_grid(part: RegionLogits, region: Region) -> torch.Tensor:
    """The covered logits placed into zero logits of the whole network grid.

    F.interpolate cannot resample a sub-box with the whole grid's coordinates, so the torch engine
    exports the whole grid and keeps the box; interpolation is local, so labels inside the box read
    only logits of `region.network`, which are the whole image's there. The numpy engine exports the
    box alone (inference.engines.numpy_engine.export)."""
    data = part.data
    whole = torch.zeros((data.shape[0], *region.network_shape), dtype=data.dtype, device=data.device)
    whole[(slice(None), *(slice(s, s + n) for s, n in zip(part.start, data.shape[1:])))] = data
    return whole
