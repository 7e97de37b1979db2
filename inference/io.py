"""Finding cases in an input folder, reading them with SimpleITK, writing label maps atomically."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from inference import InferenceError, nifti


@dataclass
class Case:
    """One case: its id and one file per input channel (`<case>_0000<ending>`, `_0001`, ...)."""
    case_id: str
    channel_files: list[Path]


@dataclass
class Volume:
    """Image data (C, Z, Y, X) float32 plus the geometry of channel 0, as SimpleITK reads it."""
    data: np.ndarray
    spacing: tuple[float, ...]   # (z, y, x): the array's axis order
    reference: sitk.Image        # 1-voxel image carrying spacing, origin and direction


def find_cases(input_dir: Path, num_channels: int, file_ending: str = ".nii.gz") -> tuple[list[Case], list[str]]:
    """Cases in `input_dir` and warnings about files that were skipped.

    A case is a `<case>_0000<ending>` file; its other channels must sit beside it. Raises when the
    folder is missing; an empty list when no case is there.
    """
    if not input_dir.is_dir():
        raise InferenceError(f"{input_dir}: input folder not found")
    first_suffix = "_0000" + file_ending
    skipped, cases = [], []
    for path in sorted(input_dir.iterdir()):
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        if name.endswith(first_suffix):
            case_id = name[: -len(first_suffix)]
            cases.append(Case(case_id, [input_dir / f"{case_id}_{c:04d}{file_ending}"
                                        for c in range(num_channels)]))
        elif not _is_other_channel(name, file_ending, num_channels):
            skipped.append(f"{path}: not named <case>_0000{file_ending}; skipped")
    return cases, skipped


def _is_other_channel(name: str, file_ending: str, num_channels: int) -> bool:
    if not name.endswith(file_ending):
        return False
    stem = name[: -len(file_ending)]
    suffix = stem.rsplit("_", 1)[-1]
    return len(suffix) == 4 and suffix.isdigit() and 0 < int(suffix) < num_channels


@dataclass
class _Channel:
    """One input file opened for reading: header read and checked, no voxel read yet."""
    path: Path
    reader: sitk.ImageFileReader
    header: nifti.NiftiFile
    size_known_good: bool   # the file holds the header's bytes (else decompress to find out)


def _open_channel(path: Path, links: ExitStack) -> _Channel:
    """Recognise the file by its content (inference.nifti), check the header against the file's size and
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


def _same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5))


def header_geometry(path: Path) -> tuple[tuple[int, ...], tuple[float, ...], float]:
    """(shape, spacing) in (Z, Y, X) order and bytes per voxel, from the header checked as read_case does."""
    with ExitStack() as links:
        channel = _open_channel(Path(path), links)
        return (channel.reader.GetSize()[::-1], channel.reader.GetSpacing()[::-1],
                channel.header.bytes_per_voxel)


def read_case(case: Case, model=None) -> Volume:
    """Read all channels of a case (ITK's NIfTI reader already turns NaN voxels into 0).

    Before any voxel is read: each file is recognised by its content and its header checked against
    the file's size; with `model` (an inference.model.LoadedModel) the case is also costed
    (inference.cost.check_case: resampled grid and peak memory) and refused when it cannot be afforded.
    """
    with ExitStack() as links:
        channels = [_open_channel(p, links) for p in case.channel_files]
        if model is not None:
            from inference.cost import check_case
            first = channels[0].reader
            check_case(first.GetSize()[::-1], first.GetSpacing()[::-1], len(channels),
                       max(c.header.bytes_per_voxel for c in channels), model, str(case.channel_files[0]))
        for channel in channels:
            if not channel.size_known_good:  # after costing: this decompresses (bounded) once more
                nifti.check_size_by_decompressing(channel.header)
        images = [_run(c.path, c.reader.Execute) for c in channels]
    for path, image in zip(case.channel_files[1:], images[1:]):
        if not _same_geometry(images[0], image):
            raise InferenceError(f"{path}: geometry differs from {case.channel_files[0]}")
    arrays = [sitk.GetArrayFromImage(image).astype(np.float32, copy=False) for image in images]
    reference = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    reference.SetSpacing(images[0].GetSpacing())
    reference.SetOrigin(images[0].GetOrigin())
    reference.SetDirection(images[0].GetDirection())
    return Volume(data=np.stack(arrays), spacing=tuple(images[0].GetSpacing()[::-1]), reference=reference)


def write_segmentation(labels: np.ndarray, reference: sitk.Image, out_file: Path) -> None:
    """Write a (Z, Y, X) label map with the reference geometry, compressed, under a temporary name,
    then rename: readers never see a partial file, and a failure leaves nothing behind."""
    image = sitk.GetImageFromArray(labels.astype(np.uint8, copy=False))
    image.SetSpacing(reference.GetSpacing())
    image.SetOrigin(reference.GetOrigin())
    image.SetDirection(reference.GetDirection())
    # The temporary name keeps the .nii.gz ending so SimpleITK picks the NIfTI writer.
    tmp = out_file.with_name(f".{out_file.name[:-7]}.{os.getpid()}.partial.nii.gz")
    try:
        sitk.WriteImage(image, str(tmp), useCompression=True, compressionLevel=1)
        os.chmod(tmp, 0o644)  # readable by the host user when written as root inside a container
        os.replace(tmp, out_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
