"""nnU-Net's spacing rules, shared by every array engine: the grid a spacing change gives, and which axis
(if any) is resampled on its own because the data is anisotropic.

Plain Python, used by both engines' preprocessing and export.
"""
from __future__ import annotations

from typing import Sequence

ANISOTROPY_THRESHOLD = 3.0  # nnU-Net's ANISO_THRESHOLD


def new_shape_for_spacing(shape: Sequence[int], spacing: Sequence[float],
                          target_spacing: Sequence[float]) -> tuple[int, ...]:
    """Shape after resampling from `spacing` to `target_spacing` (nnU-Net: round(old * s / t))."""
    return tuple(int(round(s / t * n)) for n, s, t in zip(shape, spacing, target_spacing))


def _lowres_axis(spacing: Sequence[float]) -> int | None:
    """The single axis with the largest spacing, or None when two or three axes share it."""
    largest = max(spacing)
    axes = [i for i, s in enumerate(spacing) if s == largest]
    return axes[0] if len(axes) == 1 else None


def separate_axis(spacing: Sequence[float], target_spacing: Sequence[float],
                  force_separate_z: bool | None) -> int | None:
    """Axis resampled separately (nearest), or None; nnU-Net's determine_do_sep_z_and_axis rules."""
    if force_separate_z is False:
        return None
    if force_separate_z:
        return _lowres_axis(spacing)
    for candidate in (spacing, target_spacing):
        if max(candidate) / min(candidate) > ANISOTROPY_THRESHOLD:
            return _lowres_axis(candidate)
    return None
