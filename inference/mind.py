"""MIND-SSC: modality-independent neighbourhood descriptor, self-similarity context (torch).

Written from the definition (Heinrich et al. 2012/2013, summarised in docs/flare.md section 5):

* six face-neighbour offsets at distance ``dilation`` voxels: +z, -z, +y, -y, +x, -x;
* the 12 pairs of those offsets that lie on different axes (the three opposite pairs are left out);
* per pair (a, b) and voxel x: D_ab(x) = sum_p w(p) * (I(x + p + a) - I(x + p + b))^2 over the patch
  p in [-r, r]^3, with w uniform ("box") or a normalised Gaussian of std ``sigma`` voxels ("gaussian");
* subtract the per-voxel minimum over the 12 channels, divide by the per-voxel mean over the 12
  channels, that mean clamped to [0.001, 1000] x its mean over the whole volume, and take exp(-.).

Conventions (they define the values at the borders and the channel order):
* axes are (Z, Y, X) = SimpleITK's array order; offsets are in voxels, whatever the spacing
  (spacing-agnostic, as in the original);
* the image is extended beyond its borders by edge replication, and every step works on that extended
  image. This is what makes slab processing exact: a slab plus a halo of ``dilation + radius`` slices is
  all a slab needs, and at the volume's ends the halo is the replicated edge slice;
* channel k is pair ``PAIRS[k]`` (indices into ``OFFSETS``);
* the image is first standardised with its whole-volume mean and std. MIND is invariant to affine
  intensity changes anyway; standardising keeps fp16 squared differences far from overflow;
* a constant image (std 0) has no structure: its descriptor is 1 everywhere.

Memory: the output (12 channels) is allocated once on the target device; the work buffers
(12 squared-difference maps of the slab plus halo and the filter temporaries) are bounded by ``slab``.
The clamp's global mean needs the whole volume, so the work is two passes: pass 1 writes the
min-subtracted distances into the output and keeps the per-voxel channel mean (1 channel); pass 2 is an
element-wise finish per slab.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from inference.mind_definition import (  # noqa: F401 - re-exported: callers import them from here
    CHANNEL_PREFIX,
    CLAMP_HIGH,
    CLAMP_LOW,
    DEFAULT_PARAMS,
    MIND_KEY,
    NUM_CHANNELS,
    OFFSETS,
    PAIRS,
    PATCHES,
    check_parameters,
    descriptor_channels_from_dataset_json,
    mind_channel_names,
    mind_dataset_json_entry,
    patch_weights,
)


def patch_weights_1d(radius: int, patch: str = "box", sigma: float = 0.8,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """inference.mind_definition.patch_weights as a tensor of `dtype`."""
    return torch.from_numpy(patch_weights(radius, patch, sigma)).to(dtype)


def _check_args(image: Any, radius: int, dilation: int, patch: str, slab: int | None) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor or numpy array, got {type(image).__name__}")
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (Z, Y, X), got shape {tuple(image.shape)}")
    if image.numel() == 0:
        raise ValueError(f"image is empty: shape {tuple(image.shape)}")
    if image.is_complex() or image.dtype == torch.bool:
        raise TypeError(f"image dtype {image.dtype} is not a real intensity type")
    check_parameters(radius, dilation, patch)
    if slab is not None and (int(slab) != slab or slab < 1):
        raise ValueError(f"slab must be None or an integer >= 1, got {slab}")
    return image


def _resolve_dtype(dtype: torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if dtype in (torch.float16, torch.bfloat16) and device.type != "cuda":
        raise ValueError(f"{dtype} compute is only supported on CUDA (device is {device})")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    return dtype


def _mean_std(image: torch.Tensor, chunk: int) -> tuple[float, float]:
    """Whole-volume mean and (population) std, accumulated in float64 slab by slab."""
    n = image.numel()
    s = 0.0
    for z0 in range(0, image.shape[0], chunk):
        s += float(image[z0:z0 + chunk].to(torch.float64).sum())
    mean = s / n
    ss = 0.0
    for z0 in range(0, image.shape[0], chunk):
        ss += float(((image[z0:z0 + chunk].to(torch.float64) - mean) ** 2).sum())
    return mean, math.sqrt(ss / n)


def _clamped_index(start: int, stop: int, size: int, device: torch.device) -> torch.Tensor:
    """Indices start..stop-1 clamped into [0, size): edge replication by gathering."""
    return torch.arange(start, stop, device=device).clamp_(0, size - 1)


def _separable_filter(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Valid (unpadded) separable filtering of (C, Z, Y, X) along Z, Y and X with 1-D weights w.

    Output shape (C, Z-2r, Y-2r, X-2r) with r = (len(w)-1)/2.
    """
    c = x.shape[0]
    k = w.numel()
    if k == 1:
        return x * w[0]
    x = x.unsqueeze(0)
    for shape in ((k, 1, 1), (1, k, 1), (1, 1, k)):
        weight = w.reshape(1, 1, *shape).expand(c, 1, *shape).contiguous()
        x = F.conv3d(x, weight, groups=c)
    return x.squeeze(0)


def _block_distances(img: torch.Tensor, z0: int, z1: int, dilation: int, w: torch.Tensor) -> torch.Tensor:
    """Patch distances D (12, z1-z0, Y, X) of output slices [z0, z1), min over channels subtracted.

    img: the whole standardised image (Z, Y, X) in compute dtype on the compute device. Only slices
    [z0 - h, z1 + h) are read (h = dilation + patch radius), replicated beyond the volume's ends.
    """
    Z, Y, X = img.shape
    r = (w.numel() - 1) // 2
    h = dilation + r
    dev = img.device
    block = img.index_select(0, _clamped_index(z0 - h, z1 + h, Z, dev))
    block = block.index_select(1, _clamped_index(-h, Y + h, Y, dev))
    block = block.index_select(2, _clamped_index(-h, X + h, X, dev))
    # Squared differences on the output region grown by the patch radius r, then the valid patch filter.
    ez, ey, ex = (z1 - z0) + 2 * r, Y + 2 * r, X + 2 * r
    sq = torch.empty((NUM_CHANNELS, ez, ey, ex), dtype=img.dtype, device=dev)

    def shifted(src: torch.Tensor, o: tuple[int, int, int]) -> torch.Tensor:
        sz, sy, sx = (h - r + dilation * v for v in o)
        return src[sz:sz + ez, sy:sy + ey, sx:sx + ex]

    for k, (i, j) in enumerate(PAIRS):
        torch.sub(shifted(block, OFFSETS[i]), shifted(block, OFFSETS[j]), out=sq[k])
        sq[k].square_()
    del block
    d = _separable_filter(sq, w)
    del sq
    d -= d.amin(dim=0, keepdim=True)
    return d


def mind_ssc(image: torch.Tensor | np.ndarray, radius: int = 1, dilation: int = 2, patch: str = "box",
             sigma: float = 0.8, slab: int | None = None, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """MIND-SSC descriptor of a 3-D image.

    Args:
        image: (Z, Y, X) intensities, any real dtype, torch tensor or numpy array (SimpleITK array order).
        radius: patch half-width r in voxels; the patch is the (2r+1)^3 cube.
        dilation: distance d in voxels of the six neighbours from the centre voxel.
        patch: "box" (uniform patch weights) or "gaussian" (Gaussian weights of std `sigma` voxels
            on the same cube).
        sigma: Gaussian patch std in voxels (only for patch="gaussian").
        slab: output slices (along Z) computed per block, or None for the whole volume in one block.
            Work memory is about 12 * (slab + 2(d+r)) * (Y + 2(d+r)) * (X + 2(d+r)) elements; the result
            is the same for any slab (the halo of d+r slices makes each block exact).
        device: compute and output device; default: the image's device.
        dtype: compute and output dtype; default float32. float16/bfloat16 only on CUDA.

    Returns:
        (12, Z, Y, X) tensor on `device` with values in (0, 1] (exp underflow aside) and per-voxel
        maximum exactly 1. Channel k compares the neighbour pair PAIRS[k] (see OFFSETS).
    """
    image = _check_args(image, radius, dilation, patch, slab)
    device = torch.device(device) if device is not None else image.device
    dtype = _resolve_dtype(dtype, device)
    Z, Y, X = image.shape
    step = Z if slab is None else int(slab)

    mean, std = _mean_std(image, chunk=16)  # float64 statistics, 16 slices at a time
    out = torch.empty((NUM_CHANNELS, Z, Y, X), dtype=dtype, device=device)
    if std == 0.0 or not math.isfinite(std):
        if not math.isfinite(std):
            raise ValueError("image contains non-finite values (NaN or inf)")
        return out.fill_(1.0)  # constant image: all distances 0, exp(0) = 1
    # Standardised copy in compute dtype on the compute device (1/12 of the output's size).
    img = torch.empty((Z, Y, X), dtype=dtype, device=device)
    for z0 in range(0, Z, step):
        blk = image[z0:z0 + step].to(device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        img[z0:z0 + step] = ((blk - mean) / std).to(dtype)
    w = patch_weights_1d(int(radius), patch, sigma, dtype=dtype).to(device)

    # Pass 1: min-subtracted distances into `out`, per-voxel channel mean into `var`, its global sum.
    var = torch.empty((Z, Y, X), dtype=torch.float32 if dtype != torch.float64 else dtype, device=device)
    total = 0.0
    for z0 in range(0, Z, step):
        z1 = min(Z, z0 + step)
        d = _block_distances(img, z0, z1, int(dilation), w)
        out[:, z0:z1] = d
        v = d.to(var.dtype).mean(dim=0)
        var[z0:z1] = v
        total += float(v.sum(dtype=torch.float64))
        del d
    del img
    global_mean = total / (Z * Y * X)
    if global_mean <= 0.0:
        # Only a degenerate image reaches this (all 12 distances equal everywhere): no contrast.
        return out.fill_(1.0)

    _divide_and_exponentiate(out, var, global_mean, step)
    return out


def _divide_and_exponentiate(out: torch.Tensor, var: torch.Tensor, global_mean: float, step: int) -> None:
    """Pass 2 of mind_ssc: exp(-D / clamp(V)), slab by slab, in place."""
    lo, hi = CLAMP_LOW * global_mean, CLAMP_HIGH * global_mean
    for z0 in range(0, out.shape[1], step):
        z1 = min(out.shape[1], z0 + step)
        v = var[z0:z1].clamp(lo, hi)
        blk = out[:, z0:z1]
        res = torch.exp(-(blk.to(v.dtype) / v))
        blk.copy_(res.to(out.dtype))


def auto_slab(shape: tuple[int, int, int], radius: int = 1, dilation: int = 2, dtype: torch.dtype = torch.float32,
              max_work_bytes: int = 1 << 30) -> int | None:
    """Largest slab whose work buffers stay within about `max_work_bytes` (None: the whole volume fits).

    The work buffers of one block are ~3 arrays of 12 x (slab + 2h) x (Y + 2h) x (X + 2h) elements
    (squared differences and two filter temporaries), h = dilation + radius.
    """
    Z, Y, X = shape
    h = int(dilation) + int(radius)
    per_slice = 3 * NUM_CHANNELS * (Y + 2 * h) * (X + 2 * h) * torch.finfo(dtype).bits // 8
    slab = max_work_bytes // per_slice - 2 * h
    return None if slab >= Z else max(1, int(slab))


def mind_channels(image: torch.Tensor | np.ndarray, params: dict[str, Any], device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = None, max_work_bytes: int = 1 << 30) -> torch.Tensor:
    """The predictor's entry point: a one-channel image (1, Z, Y, X) -> its 12 MIND channels (12, Z, Y, X).

    params: from descriptor_channels_from_dataset_json. The descriptor is computed on `device`
    (fp16 there if dtype=torch.float16 on CUDA), slab by slab within `max_work_bytes` of work memory.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"a MIND model takes one input channel (1, Z, Y, X), got shape {tuple(image.shape)}")
    device = torch.device(device)
    dtype = _resolve_dtype(dtype, device)
    slab = auto_slab(tuple(image.shape[1:]), params.get("radius", 1), params.get("dilation", 2), dtype,
                     max_work_bytes)
    return mind_ssc(image[0], slab=slab, device=device, dtype=dtype, **params)
