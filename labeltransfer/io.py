"""File helpers shared by the pipeline tools: nnU-Net raw-dataset naming, reading with clear errors,
atomic writes (temp file in the same folder, then rename: no partial output is ever left behind).

nnU-Net raw naming: images `<case>_<XXXX><ending>` (XXXX = 4-digit channel), labels `<case><ending>`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import SimpleITK as sitk

FILE_ENDING = ".nii.gz"
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class CaseError(Exception):
    """A problem with one case (bad file, missing partner file): reported, and the others go on."""


def _strip_ending(name: str, ending: str) -> str | None:
    return name[: -len(ending)] if name.endswith(ending) else None


def list_image_cases(folder: str | os.PathLike, file_ending: str = FILE_ENDING) -> dict[str, list[Path]]:
    """{case: [channel files sorted by channel]} of an nnU-Net images folder.

    Raises CaseError for a missing folder and ValueError where a case's channels are not 0..n-1.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseError(f"{folder}: not a folder")
    cases: dict[str, dict[int, Path]] = {}
    for p in folder.iterdir():
        stem = _strip_ending(p.name, file_ending)
        if stem is None or p.name.startswith("."):
            continue
        m = _CHANNEL_RE.match(stem)
        if m is None:
            continue
        cases.setdefault(m["case"], {})[int(m["channel"])] = p
    out = {}
    for case in sorted(cases):
        chans = cases[case]
        if sorted(chans) != list(range(len(chans))):
            raise ValueError(f"{folder}: case {case!r} has channels {sorted(chans)}, expected 0..{len(chans) - 1}")
        out[case] = [chans[c] for c in range(len(chans))]
    return out


def list_label_cases(folder: str | os.PathLike, file_ending: str = FILE_ENDING) -> dict[str, Path]:
    """{case: label file} of an nnU-Net labels folder (hidden temp files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseError(f"{folder}: not a folder")
    out = {}
    for p in sorted(folder.iterdir()):
        stem = _strip_ending(p.name, file_ending)
        if stem is not None and not p.name.startswith(".") and p.is_file():
            out[stem] = p
    return out


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


def _tmp_path(path: Path) -> Path:
    # same folder (rename stays atomic), hidden, keeps the ending so SimpleITK picks the same format
    return path.with_name(f".tmp{os.getpid()}_{path.name}")


def write_image_atomic(img: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        sitk.WriteImage(img, str(tmp), compress)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    write_text_atomic(json.dumps(obj, indent=2) + "\n", path)


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
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(dst)
    tmp.unlink(missing_ok=True)
    try:
        if mode == "symlink":
            os.symlink(os.path.abspath(src), tmp)
        elif mode == "hardlink":
            os.link(src, tmp)
        elif mode == "copy":
            shutil.copyfile(src, tmp)
        else:
            raise ValueError(f"link mode must be symlink, hardlink or copy, got {mode!r}")
        os.replace(tmp, dst)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> str | None:
    """None where a and b share size, spacing, origin and direction (relative/absolute tol), else why not."""
    if a.GetSize() != b.GetSize():
        return f"size {a.GetSize()} != {b.GetSize()}"
    for what, va, vb in (("spacing", a.GetSpacing(), b.GetSpacing()), ("origin", a.GetOrigin(), b.GetOrigin()),
                         ("direction", a.GetDirection(), b.GetDirection())):
        if any(abs(x - y) > tol * max(1.0, abs(x), abs(y)) for x, y in zip(va, vb)):
            return f"{what} {tuple(round(v, 4) for v in va)} != {tuple(round(v, 4) for v in vb)}"
    return None
