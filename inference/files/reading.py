"""Reading a case's channel files with SimpleITK after checking them (inference.files.nifti), and the
repository's one geometry comparison (`same_geometry`)."""
from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from inference import InferenceError
from inference.files import nifti
from inference.files.cases import Case


# The one geometry tolerance of the repository, relative to the larger magnitude (at least 1): two grids
# are the same when size is equal and every spacing, origin and direction component agrees within
# 1e-3 x max(1, |a|, |b|). NIfTI stores these as float32 and tools round-trip them through
# qform/sform, which moves them by ~1e-6 relative; a real change of grid (a resampling, a shifted origin,
# a flipped axis) is orders of magnitude larger. Written by hand: SimpleITK's own check
# (Image.IsSameImageGeometryAs / CopyInformation) uses a fixed absolute tolerance and returns no reason.
GEOMETRY_TOLERANCE = 1e-3


@dataclass
class Volume:
    """Image data (C, Z, Y, X) float32 plus the geometry of channel 0, as SimpleITK reads it."""
    data: np.ndarray
    spacing: tuple[float, ...]   # (z, y, x): the array's axis order
    reference: sitk.Image        # 1-voxel image carrying spacing, origin and direction


@dataclass
class _Channel:
    """One input file opened for reading: header read and checked, no voxel read yet."""
    path: Path
    reader: sitk.ImageFileReader
    header: nifti.NiftiFile
    size_known_good: bool   # the file holds the header's bytes (else decompress to find out)


def _open_channel(path: Path, links: ExitStack) -> _Channel:
    """Recognise the file by its content (inference.files.nifti), check the header against the file's size and
    read the header with SimpleITK (size, spacing, geometry as the pipeline will see them).

    SimpleITK picks its reader by the file name and cannot read a gzip stream named `.nii`: such a file
    (or a NIfTI under another ending) is read through a link named after its content, removed with
    `links`. A plain NIfTI named `.nii.gz` SimpleITK reads as it is.
    """
    if not path.is_file():
        raise InferenceError(f"{path}: missing input channel file")
    header = nifti.inspect(path)
    size_known_good = nifti.check_size_quick(header)
    if header.version == 2:  # ITK 5.4's NIfTI reader, behind SimpleITK 2.5, knows NIfTI-1 only
        raise InferenceError(f"{path}: a NIfTI-2 image; SimpleITK, which reads the images here, reads "
                             f"NIfTI-1 only: save it as NIfTI-1")
    name = str(path)
    if not name.endswith((".nii.gz", ".nii")) or (header.compressed and not name.endswith(".gz")):
        folder = Path(tempfile.mkdtemp(prefix="flare-read-"))
        links.callback(shutil.rmtree, folder, ignore_errors=True)
        link = folder / ("image.nii.gz" if header.compressed else "image.nii")
        link.symlink_to(path.resolve())
        name = str(link)
    import SimpleITK as sitk  # here, not at the top: the harness and the GPU check use this module without it
    reader = sitk.ImageFileReader()
    reader.SetFileName(name)
    _run(path, reader.ReadImageInformation)
    if reader.GetDimension() != 3:
        raise InferenceError(f"{path}: a {reader.GetDimension()}D image; a 3D volume is required")
    if reader.GetNumberOfComponents() != 1:
        raise InferenceError(f"{path}: has {reader.GetNumberOfComponents()} components per voxel; "
                             f"a scalar volume is required")
    return _Channel(path, reader, header, size_known_good)


def _run(path: Path, step):
    try:
        return step()
    except RuntimeError as e:
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise InferenceError(f"{path}: cannot be read as an image (corrupt or truncated?): {detail}") from None


def grid_difference(a: tuple, b: tuple, tol: float = GEOMETRY_TOLERANCE) -> str | None:
    """None when grids a and b, each (size, spacing, origin, direction) in one reader's convention, are
    the same; else why not (for messages). Size must be equal; spacing, origin and direction agree within
    `tol` x max(1, |a|, |b|) per component (see GEOMETRY_TOLERANCE)."""
    if tuple(a[0]) != tuple(b[0]):
        return f"size {tuple(a[0])} != {tuple(b[0])}"
    for what, va, vb in zip(("spacing", "origin", "direction"), a[1:], b[1:]):
        if any(abs(x - y) > tol * max(1.0, abs(x), abs(y)) for x, y in zip(va, vb)):
            return f"{what} {tuple(round(v, 4) for v in va)} != {tuple(round(v, 4) for v in vb)}"
    return None


def same_geometry(a, b, tol: float = GEOMETRY_TOLERANCE) -> str | None:
    """grid_difference of two SimpleITK images (or header readers)."""
    def grid(x):
        return x.GetSize(), x.GetSpacing(), x.GetOrigin(), x.GetDirection()
    return grid_difference(grid(a), grid(b), tol)


def header_geometry(path: Path) -> tuple[tuple[int, ...], tuple[float, ...], float]:
    """(shape, spacing) in (Z, Y, X) order and bytes per voxel, from the header checked as read_case does."""
    with ExitStack() as links:
        channel = _open_channel(Path(path), links)
        return (channel.reader.GetSize()[::-1], channel.reader.GetSpacing()[::-1],
                channel.header.bytes_per_voxel)


def read_case(case: Case, check: Callable | None = None) -> Volume:
    """Read all channels of a case (ITK's NIfTI reader already turns NaN voxels into 0).

    Before any voxel is read: each file is recognised by its content and its header checked against
    the file's size, then `check(shape, spacing, files, bytes_per_voxel, source)` may refuse the case
    (the pipeline costs it: inference.memory.cost.check_case, resampled grid and peak memory).
    """
    import SimpleITK as sitk
    with ExitStack() as links:
        channels = [_open_channel(p, links) for p in case.channel_files]
        if check is not None:
            first = channels[0].reader
            check(first.GetSize()[::-1], first.GetSpacing()[::-1], len(channels),
                  max(c.header.bytes_per_voxel for c in channels), str(case.channel_files[0]))
        for channel in channels:
            if not channel.size_known_good:  # after costing: this decompresses (bounded) once more
                nifti.check_size_by_decompressing(channel.header)
        images = [_run(c.path, c.reader.Execute) for c in channels]
    for path, image in zip(case.channel_files[1:], images[1:]):
        why = same_geometry(images[0], image)
        if why:
            raise InferenceError(f"{path}: geometry differs from {case.channel_files[0]} ({why})")
    arrays = [sitk.GetArrayFromImage(image).astype(np.float32, copy=False) for image in images]
    reference = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    reference.SetSpacing(images[0].GetSpacing())
    reference.SetOrigin(images[0].GetOrigin())
    reference.SetDirection(images[0].GetDirection())
    return Volume(data=np.stack(arrays), spacing=tuple(images[0].GetSpacing()[::-1]), reference=reference)


