"""Resampling with torch on the compute device, with nnU-Net's rules for anisotropic data.

Semantics follow nnunetv2's `resample_torch_fornnunet` (so that models planned with it agree):
linear interpolation without corner alignment; when the spacing is anisotropic (max/min > 3) the
low-resolution axis is handled separately: bilinear in-plane per slice, then nearest-exact along it.

Why nnunetv2's function is not imported (checked against nnunetv2 2.8.1):
- The logits must be resampled a few classes at a time into a running argmax (`resample_argmax`), so
  that a 1024x1024 MRI never holds all 14 resampled classes in float32 at once. nnunetv2's function
  interpolates every channel in one call and has no argmax; its label-map path (`is_seg`) resamples a
  segmentation, not logits.
- Importing `nnunetv2.preprocessing.resampling.resample_torch` imports `default_resampling`, which
  imports pandas, scikit-image, SciPy and batchgenerators' augmentations (plus einops): packages the
  slim image leaves out (docker/README.md, "What is left out").
It also sets torch's global thread count on every call (`num_threads`, default 4).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F



def resample(data: torch.Tensor, new_shape: Sequence[int], axis: int | None) -> torch.Tensor:
    """Resample a (C, X, Y, Z) float tensor to `new_shape` (3 ints) on its own device.

    `axis` None: trilinear. Otherwise bilinear within the planes orthogonal to `axis`, then
    nearest-exact along `axis`.
    """
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    if axis is None:
        return F.interpolate(data[None], new_shape, mode="trilinear", align_corners=False)[0]
    # Move the separate axis next to the channels and fold it into them: each slice is one 2D image.
    others = [a for a in range(3) if a != axis]
    c = data.shape[0]
    moved = data.permute(0, axis + 1, others[0] + 1, others[1] + 1)
    n_slices = moved.shape[1]
    plane_shape = (new_shape[others[0]], new_shape[others[1]])
    planes = F.interpolate(moved.reshape(1, c * n_slices, *moved.shape[2:]), plane_shape,
                           mode="bilinear", align_corners=False)
    planes = planes.reshape(c, n_slices, *plane_shape)
    if n_slices != new_shape[axis]:
        planes = F.interpolate(planes[None], (new_shape[axis], *plane_shape), mode="nearest-exact")[0]
    # Undo the permutation: planes is (C, axis, others[0], others[1]).
    order = [0, 0, 0]
    order[axis], order[others[0]], order[others[1]] = 1, 2, 3
    return planes.permute(0, *order).contiguous()


def resample_argmax(logits: torch.Tensor, new_shape: Sequence[int], axis: int | None,
                    classes_per_chunk: int | None = None) -> torch.Tensor:
    """argmax over classes of the resampled logits, without holding all resampled classes at once.

    logits: (K, X, Y, Z); returns (X, Y, Z) uint8 (int16 past 255 classes) on the logits' device.
    Classes are resampled `classes_per_chunk` at a time (all at once when None) into a running max;
    strict `>` keeps the first maximal class, as torch.argmax does.
    """
    n_classes = logits.shape[0]
    chunk = classes_per_chunk or n_classes
    out_dtype = torch.uint8 if n_classes <= 256 else torch.int16
    if chunk >= n_classes:
        return resample(logits.float(), new_shape, axis).argmax(0).to(out_dtype)
    best_value = best_index = None
    for start in range(0, n_classes, chunk):
        part = resample(logits[start:start + chunk].float(), new_shape, axis)
        value, index = part.max(0)
        index = index.to(out_dtype) + start
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value > best_value
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index, best_index)
        del part, value, index
    return best_index
