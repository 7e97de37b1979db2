"""NIfTI reading and writing with nibabel, in the predictor's conventions, for machines without SimpleITK.

The GPU machines this project is lent have no SimpleITK, and its 52.8 MB wheel cannot travel there
within the 64 MiB a device call may carry (docs/gpu_check.md). nibabel (3.3 MB, pure Python) reads the
same files: its array is (x, y, z) in the file's voxel order, which SimpleITK returns as (z, y, x), and
its zooms are SimpleITK's spacing, so the predictor (inference.api.segment_array) sees the same input.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from inference.files.atomic import atomic_output

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def read_volume(path: str | os.PathLike):
    """(data (1, Z, Y, X) float32, spacing (z, y, x) mm, the nibabel image for its geometry)."""
    import nibabel as nib
    img = nib.load(str(path))
    if len(img.shape) != 3:
        raise ValueError(f"{path}: a {len(img.shape)}D image; a 3D volume is required")
    data = np.asarray(img.get_fdata(dtype=np.float32)).transpose(2, 1, 0)
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3][::-1])
    return np.ascontiguousarray(data)[None], spacing, img


def simpleitk_importable() -> bool:
    """Whether SimpleITK imports here (a failed import counts as absent, as on the GPU machine)."""
    try:
        import SimpleITK  # noqa: F401  (only whether it imports)
    except ImportError:
        return False
    return True


def itk_direction(img) -> tuple[float, ...]:
    """The direction cosines SimpleITK's GetDirection() gives for the same file (LPS, row-major 3x3):
    what inference.api.segment_array takes as `direction` to find the cranio-caudal axis."""
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    return tuple(float(v) for v in (LPS_FROM_RAS @ (img.affine[:3, :3] / zooms)).ravel())


def write_labels(labels: np.ndarray, reference, path: str | os.PathLike) -> Path:
    """Write a (Z, Y, X) label map with `reference`'s geometry (uint8, gzip), atomically."""
    import nibabel as nib
    path = Path(path)
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0   # labels are stored as is
    out = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.uint8, copy=False),
                          reference.affine, header)
    with atomic_output(path, mode=0o644) as tmp:
        nib.save(out, str(tmp))
    return path


def write_volume(array_zyx: np.ndarray, spacing_xyz, path: str | os.PathLike) -> Path:
    """Write an int16 (Z, Y, X) volume centred on the origin (as benchmarks.flare.volumes places them), atomically."""
    import nibabel as nib
    path = Path(path)
    size_xyz = array_zyx.shape[::-1]
    affine = np.diag([*map(float, spacing_xyz), 1.0])
    # benchmarks.flare.volumes sets the ITK (LPS) origin to -n*s/2; in nibabel's RAS that is +n*s/2 on x and y.
    origin_lps = [-0.5 * n * s for n, s in zip(size_xyz, spacing_xyz)]
    affine[:3, 3] = [-origin_lps[0], -origin_lps[1], origin_lps[2]]
    affine[0, 0], affine[1, 1] = -affine[0, 0], -affine[1, 1]
    img = nib.Nifti1Image(np.ascontiguousarray(array_zyx.transpose(2, 1, 0)), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_output(path, mode=0o644) as tmp:
        nib.save(img, str(tmp))
    return path


def header_geometry(path: str | os.PathLike) -> tuple[tuple, tuple, tuple, tuple]:
    """(size xyz, spacing xyz, origin, direction) from the header: SimpleITK when installed, else nibabel
    (RAS rather than ITK's LPS, so compare two files with the same reader only). Raises ValueError if unreadable."""
    try:
        import SimpleITK as sitk
    except ImportError:
        sitk = None
    if sitk is not None:
        r = sitk.ImageFileReader()
        r.SetFileName(str(path))
        try:
            r.ReadImageInformation()
        except RuntimeError as e:
            raise ValueError(str(e).splitlines()[0][:120]) from None
        return r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection()
    import nibabel as nib
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError... depending on damage
        raise ValueError(f"{type(e).__name__}: {e}"[:120]) from None
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    rotation = img.affine[:3, :3] / np.array(zooms)
    return (tuple(int(s) for s in img.shape[:3]), zooms, tuple(float(v) for v in img.affine[:3, 3]),
            tuple(float(v) for v in rotation.ravel()))
