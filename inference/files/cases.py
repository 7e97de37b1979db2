"""Finding cases: the predictor's input folder and nnU-Net raw-dataset folders.

The one home of case discovery (`find_cases` for the predictor's input folder, `list_image_cases` /
`list_label_cases` for nnU-Net raw-dataset folders). nnU-Net raw naming: images
`<case>_<XXXX><ending>` (XXXX = 4-digit channel), labels `<case><ending>`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from inference import InferenceError

FILE_ENDING = ".nii.gz"


_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class Case:
    """One case: its id and one file per input channel (`<case>_0000<ending>`, `_0001`, ...)."""
    case_id: str
    channel_files: list[Path]


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


def list_image_cases(folder: str | os.PathLike, file_ending: str = FILE_ENDING) -> dict[str, list[Path]]:
    """{case: [channel files sorted by channel]} of an nnU-Net images folder (hidden files ignored).

    Raises InferenceError for a missing folder and ValueError where a case's channels are not 0..n-1.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InferenceError(f"{folder}: not a folder")
    cases: dict[str, dict[int, Path]] = {}
    for p in folder.iterdir():
        if not p.name.endswith(file_ending) or p.name.startswith("."):
            continue
        m = _CHANNEL_RE.match(p.name[: -len(file_ending)])
        if m is not None:
            cases.setdefault(m["case"], {})[int(m["channel"])] = p
    out = {}
    for case in sorted(cases):
        chans = cases[case]
        if sorted(chans) != list(range(len(chans))):
            raise ValueError(f"{folder}: case {case!r} has channels {sorted(chans)}, expected 0..{len(chans) - 1}")
        out[case] = [chans[c] for c in range(len(chans))]
    return out


def list_label_cases(folder: str | os.PathLike, file_ending: str = FILE_ENDING) -> dict[str, Path]:
    """{case: label file} of an nnU-Net labels (or predictions) folder; hidden temporary files ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InferenceError(f"{folder}: not a folder")
    return {p.name[: -len(file_ending)]: p for p in sorted(folder.iterdir())
            if p.name.endswith(file_ending) and not p.name.startswith(".") and p.is_file()}

