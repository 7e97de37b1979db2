"""One phantom scan: a subject (from its seed) imaged in a modality on a grid.

`generate_case(seed, modality, **geometry)` is the entry point. The anatomy depends only on `seed`
(and `variation`, `absent`); the grid, the sequence's small rigid motion and the intensities depend on
(seed, sequence), where sequence defaults to the modality name. So the T1 and T2 of one seed show one
person, on different grids, displaced by a few mm and degrees, as a real multi-sequence MRI study.
"""
from __future__ import annotations

import numpy as np

from .anatomy import Canvas, Subject, make_subject, paint_subject
from .geometry import (PRESETS, Grid, centered_grid, draw_spacing, resolve_direction, rotation_matrix,
                       size_for_fov)
from .imaging import render
from .tissues import MODALITIES, check_modality

MAX_INPLANE_MATRIX = 512
MAX_DRAWN_VOXELS = 12_000_000   # a drawn (not given) grid coarsens its in-plane spacing to stay below
MAX_DRAWN_VOXELS_LARGE = 30_000_000   # the same for the large field (512 x 512 x ~110 fits)

#: Fields of view a grid is drawn with. "abdomen": the body with a little air around it, a slab of the
#: upper abdomen (the generator's presets). "large": chest to pelvis (400-480 mm along z) and a square
#: in-plane field of 400-480 mm, much more air around the body, and the centre placed loosely - the
#: kind of scan where the 13 organs fill only about a quarter of the volume.
FIELDS = ("abdomen", "large")


def _sequence_rng(seed: int, sequence: str) -> np.random.Generator:
    tag = [ord(c) for c in sequence]
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E9, *tag]))


def draw_grid(rng: np.random.Generator, modality: str, subject: Subject, spacing=None, size=None,
              fov_mm=None, inplane_range=None, slice_range=None, direction="random",
              origin=None, center_mm=None, field: str = "abdomen") -> Grid:
    """The scan's grid. Unset values are drawn: spacing from the modality's preset (or the given
    ranges); field of view (`field`, see FIELDS): "abdomen": body width x 1.08-1.2 + 20 mm, 75-100 % of
    that front to back (at least the body depth + 40 mm), a slab along z from the preset; "large":
    400-480 mm square in-plane (at least the body width + 60 mm), 400-480 mm along z; size = fov /
    spacing (in-plane matrix at most 512 and at most 12 M voxels, 30 M for "large": a drawn spacing
    grows to fit, slices first); centre on the subject's upper abdomen with a random offset (abdomen:
    +-8/10 mm in-plane, 5-30 mm above L1; large: +-25 mm in-plane, 40 mm below to 10 mm above L1),
    unless `center_mm` (physical) or `origin` is given."""
    if field not in FIELDS:
        raise ValueError(f"unknown field {field!r}; choose one of {', '.join(FIELDS)}")
    preset = PRESETS[modality]
    direction_m = resolve_direction(direction, rng)
    body_w = 2 * (147.0 + 1.1 * subject.fat_mm) * subject.scale[0]
    body_ap = 2 * (112.0 + 0.85 * subject.fat_mm) * subject.scale[1]
    if field == "large":
        fx = max(rng.uniform(400.0, 480.0), body_w + 60.0)
        fov = np.array([fx, fx, rng.uniform(400.0, 480.0)])
    else:
        fx = body_w * rng.uniform(1.08, 1.2) + 20.0
        fov = np.array([fx, max(fx * rng.uniform(0.75, 1.0), body_ap + 40.0), rng.uniform(*preset.z_extent_mm)])
    max_voxels = MAX_DRAWN_VOXELS_LARGE if field == "large" else MAX_DRAWN_VOXELS
    if fov_mm is not None:
        fov = np.asarray(fov_mm, dtype=np.float64)
    if spacing is None:
        spacing = draw_spacing(rng, preset, inplane_range, slice_range)
        if size is None:
            inplane = max(spacing[0], float(fov[:2].max()) / MAX_INPLANE_MATRIX)
            slice_mm = spacing[2]
            voxels = np.prod(fov / np.array([inplane, inplane, slice_mm]))
            if voxels > max_voxels:   # thicker slices first (up to the preset's maximum) ...
                slice_mm = min(max(slice_mm, (slice_range or preset.slice_mm)[1]),
                               slice_mm * voxels / max_voxels)
                voxels = np.prod(fov / np.array([inplane, inplane, slice_mm]))
            if voxels > max_voxels:   # ... then coarser pixels
                inplane *= float(np.sqrt(voxels / max_voxels))
            spacing = (round(inplane, 4), round(inplane, 4), round(slice_mm, 3))
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing}")
    size = size_for_fov(fov, spacing) if size is None else tuple(int(s) for s in size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"size must be 3 positive integers, got {size}")
    if origin is not None:
        return Grid(size, spacing, tuple(float(o) for o in origin),
                    tuple(float(v) for v in direction_m.ravel()))
    if center_mm is None and field == "large":
        center_anat = np.array([rng.uniform(-25, 25), 12.0 * subject.scale[1] + rng.uniform(-25, 25),
                                rng.uniform(-40, 10) * subject.scale[2]])
        center_mm = subject.placement + center_anat
    elif center_mm is None:
        center_anat = np.array([rng.uniform(-8, 8), 12.0 * subject.scale[1] + rng.uniform(-10, 10),
                                rng.uniform(5, 30) * subject.scale[2]])
        center_mm = subject.placement + center_anat
    return centered_grid(size, spacing, direction_m, center_mm)


def draw_motion(rng: np.random.Generator, max_deg: float = 3.0, max_mm: float = 5.0):
    """Small rigid motion between sequences: rotation up to max_deg about a random axis through the
    anatomical origin and a shift up to max_mm per axis."""
    rot = rotation_matrix(rng.normal(size=3), np.deg2rad(rng.uniform(0.5, max_deg)))
    shift = np.clip(rng.normal(0.0, max_mm / 2, size=3), -max_mm, max_mm)
    return rot, shift


def generate_arrays(seed: int, modality: str, *, sequence: str | None = None, variation: float = 1.0,
                    absent=None, motion: bool = True, **geometry):
    """(image int16 (nz, ny, nx), label uint8 (nz, ny, nx), Grid, tissue uint8) of one scan; see
    generate_case for the arguments."""
    modality = check_modality(modality)
    subject = make_subject(seed, variation=variation, absent=absent)
    rng = _sequence_rng(seed, sequence or modality)
    grid = draw_grid(rng, modality, subject, **geometry)
    rot, shift = draw_motion(rng) if motion else (None, None)
    canvas = Canvas(grid, subject, rot, shift)
    paint_subject(canvas)
    image = render(modality, canvas.tissue, grid.spacing, rng)
    return image, canvas.label, grid, canvas.tissue


def generate_case(seed: int, modality: str, **geometry):
    """A synthetic abdominal scan and its FLARE label map, as SimpleITK images on one grid.

    seed: the subject (anatomy); modality: one of "ct", "t1", "t2", "t1c" (contrast-enhanced T1, portal
    phase), "dwi". Keyword options (all optional):
      spacing (sx, sy, sz) mm; size (nx, ny, nz); fov_mm (3,) mm; inplane_range / slice_range (lo, hi)
      mm to draw the spacing from; direction: "random", "axial", "oblique", "flip_x", "flip_y",
      "flip_xy", "flip_z" or 9 numbers (row-major); field: "abdomen" (default) or "large" (chest to
      pelvis, much air around the body; see FIELDS); origin (3,) mm or center_mm (3,) mm (physical);
      motion (bool, default True): the sequence's small rigid displacement; sequence (str): tag of the
      acquisition (default: the modality) - same seed and sequence give the same grid and motion;
      variation (float, default 1): scale of anatomical variation; absent: FLARE labels to leave out
      (default: drawn, gallbladder missing in ~8 % of subjects).
    Returns (image, label): image int16 (HU for CT), label uint8 with values 0..13.
    """
    import SimpleITK as sitk

    image, label, grid, _ = generate_arrays(seed, modality, **geometry)
    img = sitk.GetImageFromArray(image)
    lab = sitk.GetImageFromArray(label)
    grid.apply_to(img)
    grid.apply_to(lab)
    return img, lab


__all__ = ["generate_case", "generate_arrays", "draw_grid", "draw_motion", "MODALITIES"]
