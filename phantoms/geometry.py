"""Image grids of phantom scans: size, spacing, origin, direction, and how they are drawn.

Conventions (SimpleITK / DICOM): physical coordinates are LPS millimetres (x to the patient's left,
y to posterior, z to superior). A grid maps a voxel index (i, j, k) to physical space by
    p = origin + D @ (spacing * (i, j, k))
with D the 3x3 direction matrix whose columns are the axis directions. Numpy arrays of a grid have
shape (nz, ny, nx) = (size[2], size[1], size[0]), as SimpleITK's GetArrayFromImage returns them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """size: (nx, ny, nz) voxels; spacing: (sx, sy, sz) mm; origin: (3,) mm, centre of voxel (0, 0, 0);
    direction: 9 floats, row-major 3x3 (SimpleITK's GetDirection order)."""
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def index_to_physical(self) -> np.ndarray:
        """(3, 3) matrix M with p = origin + M @ index."""
        return self.direction_matrix * np.asarray(self.spacing, dtype=np.float64)[None, :]

    @property
    def array_shape(self) -> tuple[int, int, int]:
        return (self.size[2], self.size[1], self.size[0])

    def apply_to(self, image) -> None:
        """Set spacing, origin and direction of a SimpleITK image of this grid's size."""
        if tuple(image.GetSize()) != tuple(self.size):
            raise ValueError(f"image size {image.GetSize()} != grid size {self.size}")
        image.SetSpacing([float(s) for s in self.spacing])
        image.SetOrigin([float(o) for o in self.origin])
        image.SetDirection([float(d) for d in self.direction])


def centered_grid(size, spacing, direction: np.ndarray, center_mm) -> Grid:
    """A grid of `size` voxels and `spacing` mm whose centre lies at `center_mm` (physical)."""
    size = tuple(int(s) for s in size)
    spacing = tuple(float(s) for s in spacing)
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    m = d * np.asarray(spacing)[None, :]
    origin = np.asarray(center_mm, dtype=np.float64) - m @ ((np.asarray(size) - 1) / 2.0)
    return Grid(size, spacing, tuple(float(o) for o in origin), tuple(float(v) for v in d.ravel()))


# --- directions -----------------------------------------------------------------------------------

#: Named axis-aligned directions. "axial" is identity (i: R->L, j: A->P, k: I->S); the flips are the
#: variants real files show (e.g. "flip_xy" is how an image stored in RAS order reads in SimpleITK).
NAMED_DIRECTIONS: dict[str, np.ndarray] = {
    "axial": np.eye(3),
    "flip_x": np.diag([-1.0, 1.0, 1.0]),
    "flip_y": np.diag([1.0, -1.0, 1.0]),
    "flip_xy": np.diag([-1.0, -1.0, 1.0]),
    "flip_z": np.diag([1.0, 1.0, -1.0]),
}
DIRECTION_CHOICES = ("random", "oblique", *NAMED_DIRECTIONS)


def rotation_matrix(axis, angle_rad: float) -> np.ndarray:
    """(3, 3) rotation about a (normalised) axis by angle_rad (right-handed)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


def oblique_direction(rng: np.random.Generator, min_deg: float = 6.0, max_deg: float = 20.0) -> np.ndarray:
    """An axial direction tilted by min_deg..max_deg about a random axis, like an angled acquisition."""
    axis = rng.normal(size=3)
    angle = np.deg2rad(rng.uniform(min_deg, max_deg))
    return rotation_matrix(axis, angle)


def resolve_direction(direction, rng: np.random.Generator) -> np.ndarray:
    """A (3, 3) direction matrix from a name in DIRECTION_CHOICES, 9 numbers or a 3x3 array.

    "random": axial 55 %, one of the flips 30 %, oblique (possibly flipped) 15 %.
    """
    if direction is None:
        direction = "random"
    if isinstance(direction, str):
        if direction == "random":
            u = rng.random()
            if u < 0.55:
                return NAMED_DIRECTIONS["axial"].copy()
            if u < 0.85:
                names = ["flip_x", "flip_y", "flip_xy", "flip_z"]
                return NAMED_DIRECTIONS[names[rng.integers(len(names))]].copy()
            flip = NAMED_DIRECTIONS[["axial", "flip_xy"][rng.integers(2)]]
            return oblique_direction(rng) @ flip
        if direction == "oblique":
            return oblique_direction(rng)
        if direction in NAMED_DIRECTIONS:
            return NAMED_DIRECTIONS[direction].copy()
        raise ValueError(f"unknown direction {direction!r}; choose one of {', '.join(DIRECTION_CHOICES)} "
                         f"or give 9 numbers")
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-6):
        raise ValueError(f"direction {d.ravel().tolist()} is not orthonormal")
    return d


# --- per-modality acquisition presets ----------------------------------------------------------------

@dataclass(frozen=True)
class AcquisitionPreset:
    """Ranges a grid is drawn from: in-plane and slice spacing (mm), slab length along z (mm)."""
    inplane_mm: tuple[float, float]
    slice_mm: tuple[float, float]
    z_extent_mm: tuple[float, float]


PRESETS: dict[str, AcquisitionPreset] = {
    "ct": AcquisitionPreset((0.6, 0.98), (2.0, 5.0), (220.0, 320.0)),
    "t1": AcquisitionPreset((0.7, 1.6), (2.0, 6.0), (200.0, 280.0)),
    "t2": AcquisitionPreset((0.6, 1.5), (4.0, 8.0), (200.0, 280.0)),
    "t1c": AcquisitionPreset((0.7, 1.5), (1.5, 4.0), (190.0, 260.0)),
    "dwi": AcquisitionPreset((1.2, 2.0), (5.0, 8.0), (200.0, 260.0)),
}


def draw_spacing(rng: np.random.Generator, preset: AcquisitionPreset,
                 inplane_range=None, slice_range=None) -> tuple[float, float, float]:
    """(s, s, sz) mm: square in-plane pixels, drawn uniformly from the given or preset ranges."""
    lo, hi = inplane_range or preset.inplane_mm
    zlo, zhi = slice_range or preset.slice_mm
    s = float(rng.uniform(lo, hi))
    return (round(s, 4), round(s, 4), round(float(rng.uniform(zlo, zhi)), 3))


def size_for_fov(fov_mm, spacing) -> tuple[int, int, int]:
    """Voxel counts covering fov_mm (3,) at spacing (3,), at least 8 per axis."""
    return tuple(max(8, int(round(f / s))) for f, s in zip(fov_mm, spacing))
