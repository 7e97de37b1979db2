"""Reading a case's channel files with SimpleITK after checking them (inference.files.nifti), and the
repository's one geometry comparison (`same_geometry`)."""
from __future__ import annotations

import math
import re
import sys
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
        import shutil   # here: rare, and tempfile's import is a cost every container start would pay
        import tempfile
        folder = Path(tempfile.mkdtemp(prefix="flare-read-"))
        links.callback(shutil.rmtree, folder, ignore_errors=True)
        link = folder / ("image.nii.gz" if header.compressed else "image.nii")
        link.symlink_to(path.resolve())
        name = str(link)
    import SimpleITK as sitk  # here, not at the top: the harness and the GPU check use this module without it
    reader = sitk.ImageFileReader()
    reader.SetFileName(name)
    try:
        _run(path, reader.ReadImageInformation)
    except InferenceError:
        if header.compressed:   # ITK cannot say why; a damaged stream (e.g. its ISIZE) is the likely cause
            nifti.check_gzip_stream(header)
        raise
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


def describe_failure(source: str | Path, e: BaseException) -> str:
    """A sentence for an unexpected error while processing `source`, without Python's type names."""
    if isinstance(e, MemoryError):
        return f"{source}: not enough memory to process this case"
    if isinstance(e, OSError):
        where = f" ({e.filename})" if e.filename else ""
        return f"{source}: could not be processed: {e.strerror or e}{where}"
    text = str(e).strip().splitlines()[-1].strip() if str(e).strip() else "no detail given"
    return f"{source}: could not be processed: {_PYTHON_TYPE_PREFIX.sub('', text)}"


# "ValueError: ..." at the start of an error text: a type name means nothing to a user.
_PYTHON_TYPE_PREFIX = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Warning)\s*:\s*)+")


def _voxels(channel: _Channel) -> np.ndarray:
    """Voxels (Z, Y, X) float32 of one checked channel, as ITK's NIfTI reader would give them.

    A gzip stream of a plain voxel type is decompressed here, once, with its CRC checked
    (nifti.read_gzip_verified), and the voxels taken from it: ITK would neither check the CRC nor save
    a second decompression. Other files are read by ITK (a stream ITK reads is checked first).
    """
    header, reader = channel.header, channel.reader
    size = reader.GetSize()
    voxels = int(np.prod(size))
    dtype = nifti.NUMPY_TYPES.get(header.datatype)
    if not header.compressed:
        if not channel.size_known_good:
            nifti.check_size_by_decompressing(header)
        return _itk_voxels(channel)
    stream = nifti.read_gzip_verified(header)
    if dtype is None or voxels * np.dtype(dtype).itemsize > header.data_bytes:
        del stream
        return _itk_voxels(channel)
    data = np.frombuffer(stream, dtype=np.dtype(dtype).newbyteorder(header.endian), count=voxels,
                         offset=header.vox_offset).reshape(size[::-1])
    return _scaled(data, header.scl_slope, header.scl_inter)


def _itk_voxels(channel: _Channel) -> np.ndarray:
    import SimpleITK as sitk
    image = _run(channel.path, channel.reader.Execute)
    return sitk.GetArrayFromImage(image).astype(np.float32, copy=False)


def _scaled(data: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """float32 voxels with the header's scaling applied as ITK's NIfTI reader does (checked against it
    in tests): a slope that is not finite or below double epsilon in size counts as 1, an intercept that
    is not finite as 0, one below epsilon with a slope of 1 means no scaling, and a voxel that is NaN or
    infinite is 0 before scaling."""
    eps = sys.float_info.epsilon
    slope = slope if math.isfinite(slope) and abs(slope) >= eps else 1.0
    inter = inter if math.isfinite(inter) else 0.0
    identity = slope == 1.0 and abs(inter) < eps
    if identity:
        out = data.astype(np.float32)
        if data.dtype.kind == "f":
            np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return out
    out = np.empty(data.shape, np.float32)
    for z in range(data.shape[0]):   # in double, as ITK computes, one slice at a time (no full float64 copy)
        plane = data[z].astype(np.float64)
        if data.dtype.kind == "f":
            np.nan_to_num(plane, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        out[z] = plane * slope + inter
    return out


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
        first = channels[0].reader
        for channel in channels[1:]:   # from the headers: before any voxel is read
            why = same_geometry(first, channel.reader)
            if why:
                raise InferenceError(f"{channel.path}: geometry differs from {case.channel_files[0]} ({why})")
        arrays = [_voxels(c) for c in channels]
    reference = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    reference.SetSpacing(first.GetSpacing())
    reference.SetOrigin(first.GetOrigin())
    reference.SetDirection(first.GetDirection())
    data = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)
    return Volume(data=data, spacing=tuple(first.GetSpacing()[::-1]), reference=reference)


