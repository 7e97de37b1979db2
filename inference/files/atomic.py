"""Atomic file output: write under a hidden temporary name in the target folder, then rename.

Readers never see a half-written file, and a failure (or a kill) leaves no partial output under the
final name: `os.replace` within one folder is atomic on POSIX file systems. The temporary name keeps
the file's full ending (`.nii.gz`, `.json`, ...) so that writers choosing a format by extension
(SimpleITK, matplotlib) pick the same one, and starts with `.tmp_` so that case discovery, which skips
hidden files, never takes it for an input.

This is the one home of the pattern: every tool of the repository writes its outputs through it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_name(path: Path) -> Path:
    """The hidden temporary sibling of `path` (same folder, same ending, unique per process)."""
    return path.with_name(f".tmp_{os.getpid()}_{path.name}")


@contextmanager
def atomic_output(path: str | os.PathLike, mode: int | None = None, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any exception it is deleted.

        with atomic_output(out / "case.nii.gz", mode=0o644) as tmp:
            sitk.WriteImage(image, str(tmp))

    mode: permissions to set before the rename (e.g. 0o644 so a host user can read what a container
    wrote as root).
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """`obj` as JSON (with a final newline) written atomically."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")
