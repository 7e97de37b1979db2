"""Reading label maps the way the official FLARE scorer does, and checking that two of them share a grid.

The scorer reads masks with nibabel and casts them to uint8 (`np.uint8(nib.load(f).get_fdata())`), takes
the spacing from the ground truth's header zooms and treats the third nibabel array axis as z. A
`LabelMap` keeps that array (axes x, y, z: nibabel order, which is SimpleITK's index order i, j, k),
the zooms and the voxel-to-RAS affine, whichever way the mask came in (file or SimpleITK image).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


class MaskError(ValueError):
    """A label map that cannot be scored: unreadable, not 3D, or on another grid than its ground truth."""


@dataclass(frozen=True)
class LabelMap:
    """A label map in nibabel axis order.

    array: (X, Y, Z) uint8; spacing: (3,) mm along those axes; affine: (4, 4) voxel -> RAS mm;
    name: where it came from, for messages.
    """
    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    name: str


def _to_uint8(data: np.ndarray) -> np.ndarray:
    """The official cast: uint8 of the (float) voxel values; out-of-range values wrap as numpy casts."""
    if data.dtype == np.uint8:
        return data
    with np.errstate(invalid="ignore", over="ignore"):
        return np.asarray(data).astype(np.float64).astype(np.uint8)


def read_label_map(path: str | os.PathLike) -> LabelMap:
    """Read a NIfTI label map with nibabel; raises MaskError naming the file on any problem."""
    import nibabel as nib

    path = os.fspath(path)
    try:
        img = nib.load(path)
        if len(img.shape) != 3:
            raise MaskError(f"{path}: expected a 3D label map, got shape {img.shape}")
        if (img.get_data_dtype() == np.uint8 and getattr(img.dataobj, "slope", 1) == 1
                and getattr(img.dataobj, "inter", 0) == 0):
            array = np.asarray(img.dataobj)          # already what the official cast yields
        else:
            array = _to_uint8(img.get_fdata())
    except MaskError:
        raise
    except Exception as exc:  # nibabel raises many types for broken files
        raise MaskError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return LabelMap(array, zooms, np.asarray(img.affine, dtype=np.float64), path)


def from_sitk(image, name: str = "<SimpleITK image>") -> LabelMap:
    """A SimpleITK image as a LabelMap (array transposed to x, y, z; affine from LPS to RAS)."""
    import SimpleITK as sitk

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise MaskError(f"{name}: expected a scalar 3D image, got dimension {image.GetDimension()} "
                        f"with {image.GetNumberOfComponentsPerPixel()} components")
    array = np.ascontiguousarray(sitk.GetArrayViewFromImage(image).transpose(2, 1, 0))
    spacing = tuple(float(s) for s in image.GetSpacing())
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(spacing)[None, :]
    lps[:3, 3] = image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return LabelMap(_to_uint8(array), spacing, affine, name)


def as_label_map(obj, name: str | None = None) -> LabelMap:
    """Accept a LabelMap, a path or a SimpleITK image."""
    if isinstance(obj, LabelMap):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return read_label_map(obj)
    try:
        import SimpleITK as sitk
    except ImportError:  # pragma: no cover - SimpleITK is a core dependency
        sitk = None
    if sitk is not None and isinstance(obj, sitk.Image):
        return from_sitk(obj, name or "<SimpleITK image>")
    raise TypeError(f"expected a path, a SimpleITK image or a LabelMap, got {type(obj).__name__}")


def check_same_grid(pred: LabelMap, gt: LabelMap, origin_tol_mm: float = 1e-2,
                    matrix_tol: float = 1e-3) -> None:
    """Raise MaskError unless `pred` has the ground truth's shape, spacing, direction and origin.

    Tolerances: voxel-to-world matrix entries (direction x spacing, mm) within `matrix_tol`, origin
    within `origin_tol_mm` (NIfTI stores them as float32).
    """
    if pred.array.shape != gt.array.shape:
        raise MaskError(f"{pred.name}: shape {pred.array.shape} differs from the ground truth "
                        f"{gt.name} shape {gt.array.shape} (x, y, z)")
    if not np.allclose(pred.affine[:3, :3], gt.affine[:3, :3], rtol=0, atol=matrix_tol):
        raise MaskError(f"{pred.name}: spacing/direction differ from the ground truth {gt.name}: "
                        f"spacing {np.round(pred.spacing, 5).tolist()} vs {np.round(gt.spacing, 5).tolist()}, "
                        f"voxel-to-world matrix\n{np.round(pred.affine[:3, :3], 5)}\nvs\n"
                        f"{np.round(gt.affine[:3, :3], 5)}")
    if not np.allclose(pred.affine[:3, 3], gt.affine[:3, 3], rtol=0, atol=origin_tol_mm):
        raise MaskError(f"{pred.name}: origin {np.round(pred.affine[:3, 3], 4).tolist()} (RAS mm) differs "
                        f"from the ground truth {gt.name} origin {np.round(gt.affine[:3, 3], 4).tolist()}")
