"""File helpers of the pipeline tools: reading with clear errors, SimpleITK images written atomically,
placing files by link or copy.

Case discovery, the geometry comparison and atomic output have one home in the predictor's layer
(inference/files/, inference/files/atomic.py); they are re-exported here for the tools' convenience.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from inference import InferenceError
from inference.files import atomic
from inference.files.atomic import atomic_output
from inference.files.cases import FILE_ENDING, list_image_cases, list_label_cases
from inference.files.reading import same_geometry  # noqa: F401  re-exported


# One error type for "this input is bad" across the predictor and the pipeline tools.
CaseError = InferenceError


def read_image(path: str | os.PathLike, pixel: int | None = None) -> sitk.Image:
    """Read an image with SimpleITK; CaseError names the file and the reason."""
    path = Path(path)
    if not path.exists():
        raise CaseError(f"{path}: file not found")
    try:
        img = sitk.ReadImage(str(path), pixel) if pixel is not None else sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise CaseError(f"{path}: cannot read image ({first})") from None
    if img.GetDimension() != 3:
        raise CaseError(f"{path}: expected a 3-D image, got {img.GetDimension()}-D")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"{path}: expected a scalar image, got {img.GetNumberOfComponentsPerPixel()} components")
    return img


def read_header(path: str | os.PathLike) -> sitk.ImageFileReader:
    """The header only (GetSize/GetSpacing/GetOrigin/GetDirection work on the result); CaseError if bad."""
    path = Path(path)
    if not path.exists():
        raise CaseError(f"{path}: file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise CaseError(f"{path}: cannot read image header ({first})") from None
    if reader.GetDimension() != 3:
        raise CaseError(f"{path}: expected a 3-D image, got {reader.GetDimension()}-D")
    return reader


def write_image_atomic(img: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    with atomic_output(path) as tmp:
        sitk.WriteImage(img, str(tmp), compress)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    atomic.write_text(path, text)


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    atomic.write_json(path, obj)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CaseError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise CaseError(f"{path}: invalid JSON ({e})") from None


def place_file(src: Path, dst: Path, mode: str) -> None:
    """Put `src` at `dst` by "symlink" (absolute target), "hardlink" or "copy"; atomic, replaces dst."""
    if mode not in ("symlink", "hardlink", "copy"):
        raise ValueError(f"link mode must be symlink, hardlink or copy, got {mode!r}")
    with atomic_output(dst) as tmp:
        tmp.unlink(missing_ok=True)  # a leftover of a killed run of this process id
        if mode == "symlink":
            os.symlink(os.path.abspath(src), tmp)
        elif mode == "hardlink":
            os.link(src, tmp)
        else:
            shutil.copyfile(src, tmp)
