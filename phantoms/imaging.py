"""From a tissue map to an image: intensities, texture, partial-volume blur, MRI bias field and noise.

Order, as in a scanner: tissue means (jittered per case) -> smooth within-tissue texture -> blur over
about one voxel (the point-spread function: partial volume at boundaries) -> MRI: multiplicative coil
bias field, then Rician noise (magnitude of complex Gaussian noise); CT: Gaussian noise -> storage type
(int16; HU for CT, arbitrary units with a random gain for MRI).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .tissues import T, check_modality, mean_intensities, texture_amplitudes

# noise standard deviation: HU for CT, fraction of the fat/fluid reference level for MRI
_NOISE = {"ct": (8.0, 20.0), "t1": (0.015, 0.035), "t2": (0.015, 0.035), "t1c": (0.015, 0.035),
          "dwi": (0.04, 0.07)}
_BLUR_VOXELS = {"dwi": (0.5, 0.9, 0.9)}        # (z, y, x) sigma in voxels; DWI is blurrier
_DEFAULT_BLUR = (0.45, 0.45, 0.45)


def _interp_matrix(n: int, m: int) -> np.ndarray:
    """(n, m) float32: linear interpolation from m coarse nodes spanning [0, n-1] to n points."""
    pos = np.linspace(0.0, m - 1.0, n)
    lo = np.minimum(np.floor(pos).astype(int), m - 2) if m > 1 else np.zeros(n, int)
    w = pos - lo
    mat = np.zeros((n, m), dtype=np.float32)
    mat[np.arange(n), lo] = 1.0 - w
    if m > 1:
        mat[np.arange(n), lo + 1] += w
    return mat


def _smooth_field(rng: np.random.Generator, shape, spacing_zyx, step_mm: float = 14.0) -> np.ndarray:
    """Zero-mean, unit-variance-ish smooth random field of `shape` (float32): Gaussian noise on a grid
    of ~step_mm, trilinearly upsampled (separably, as three small matrix products)."""
    low = tuple(int(np.ceil(n * s / step_mm)) + 2 for n, s in zip(shape, spacing_zyx))
    a = rng.standard_normal(low).astype(np.float32)
    wz, wy, wx = (_interp_matrix(n, m) for n, m in zip(shape, low))
    a = a @ wx.T                                             # (lz, ly, nx)
    a = np.einsum("ij,kjl->kil", wy, a)                     # (lz, ny, nx)
    return (wz @ a.reshape(low[0], -1)).reshape(shape)


def _bias_field(rng: np.random.Generator, shape, strength: float) -> np.ndarray:
    """exp(smooth quadratic polynomial over the field of view), mean log ~ 0; strength ~ log range."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    z, y, x = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    c = rng.normal(0.0, strength, size=9).astype(np.float32)
    log_b = (c[0] * x + c[1] * y + c[2] * z + c[3] * (x * x - 0.33) + c[4] * (y * y - 0.33)
             + 0.5 * c[5] * (z * z - 0.33) + c[6] * x * y + 0.5 * c[7] * x * z + 0.5 * c[8] * y * z)
    return np.exp(log_b).astype(np.float32)


def render(modality: str, tissue: np.ndarray, spacing_xyz, rng: np.random.Generator) -> np.ndarray:
    """Image array (same shape as `tissue`, int16) of a tissue map (nz, ny, nx) in `modality`.

    spacing_xyz: (sx, sy, sz) mm (SimpleITK order). CT values are HU; MRI values are >= 0.
    """
    mod = check_modality(modality)
    spacing_zyx = tuple(float(s) for s in spacing_xyz)[::-1]
    means = mean_intensities(mod).copy()
    if mod == "ct":
        jitter = rng.normal(0.0, 8.0, size=means.shape).astype(np.float32)
        jitter[[T["air"], T["gas"], T["lung"]]] = 0.0
        means += jitter
    else:
        means *= np.exp(rng.normal(0.0, 0.07, size=means.shape)).astype(np.float32)
    amp = texture_amplitudes(mod)
    if mod != "ct":
        amp = amp * means
    img = means[tissue]
    img += amp[tissue] * _smooth_field(rng, tissue.shape, spacing_zyx)
    img = ndimage.gaussian_filter(img, sigma=_BLUR_VOXELS.get(mod, _DEFAULT_BLUR), mode="nearest",
                                  truncate=3.0)
    lo, hi = _NOISE[mod]
    if mod == "ct":
        noise = rng.standard_normal(img.shape, dtype=np.float32)
        noise *= np.float32(rng.uniform(lo, hi))
        img += noise
        return np.clip(np.rint(img), -1024, 3071).astype(np.int16)
    img *= _bias_field(rng, img.shape, strength=0.12 if mod != "dwi" else 0.18)
    sigma = np.float32(rng.uniform(lo, hi) * float(means.max()))
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n1 *= sigma
    img += n1
    np.square(img, out=img)
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 *= sigma
    np.square(n2, out=n2)
    img += n2
    np.sqrt(img, out=img)
    img *= np.float32(rng.uniform(0.6, 2.5))
    return np.clip(np.rint(img), 0, 32767).astype(np.int16)
