"""Atomic, verified file output: write under a hidden temporary name in the target folder, check what
was written, flush it to the disk, then rename.

Readers never see a half-written file, and a failure (or a kill) leaves no partial output under the
final name: `os.replace` within one folder is atomic on POSIX file systems. The temporary name keeps
the file's full ending (`.nii.gz`, `.json`, ...) so that writers choosing a format by extension
(SimpleITK, matplotlib) pick the same one, and starts with `.tmp_` so that case discovery, which skips
hidden files, never takes it for an input.

Why verify: not every writer reports a failed write. SimpleITK's NIfTI writer prints "NWAD: wrote only 0
of N bytes" on a full disk and returns normally, leaving a truncated or empty file. So before the rename
the temporary file is checked (a NIfTI file must hold every byte its header promises: for gzip, the
trailer's ISIZE must equal header + voxels; see `verify_nifti`), then fsync'ed (a deferred write error,
e.g. EIO or ENOSPC on a network file system, surfaces there), and after the rename the folder is
fsync'ed so the new name survives a crash. Any failure removes the temporary file and raises
`WriteError` naming the final file; `DiskFullError` when the disk (or quota) is full, so that a folder
run can stop: the next case would fail too.

This is the one home of the pattern: every tool of the repository writes its outputs through it.
"""
from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inference import InferenceError

# Errors that mean "no room": the disk is full or the user's quota is spent.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# A writer that fails without reporting it, with less free space than this, ran out of space.
_NEARLY_FULL_BYTES = 1 << 20


class WriteError(InferenceError):
    """An output file could not be written completely; nothing was left under its name."""


class DiskFullError(WriteError):
    """An output file could not be written because its file system (or quota) is full."""


def temporary_name(path: Path) -> Path:
    """The hidden temporary sibling of `path` (same folder, same ending, unique per process)."""
    return path.with_name(f".tmp_{os.getpid()}_{path.name}")


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _error_for(path: Path, problem: str, no_space: bool) -> WriteError:
    if no_space:
        return DiskFullError(f"{path}: not written: no space left on device (the disk or quota holding "
                             f"{path.parent} is full); nothing was left under this name")
    return WriteError(f"{path}: not written: {problem}; nothing was left under this name")


def _from_os_error(path: Path, e: OSError) -> WriteError:
    reason = e.strerror or str(e)
    return _error_for(path, reason, e.errno in NO_SPACE_ERRNOS)


def _verify_by_ending(tmp: Path, final: Path) -> None:
    name = final.name
    if name.endswith((".nii.gz", ".nii")):
        verify_nifti(tmp)


def verify_nifti(path: Path) -> None:
    """Raise unless `path` is a NIfTI file holding every byte its header promises (read: the header and,
    for gzip, the 4-byte ISIZE trailer; only a stream of 4 GiB or more is decompressed to count)."""
    from inference.files import nifti
    header = nifti.inspect(path)
    if not nifti.check_size_quick(header):
        nifti.check_size_by_decompressing(header)


def _fsync_file(path: Path) -> None:
    if path.is_symlink():   # a placed link (labeltransfer.io.place_file): nothing of ours to flush
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; a file system that cannot sync folders (EINVAL) is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _finish(tmp: Path, path: Path, mode: int | None, verify: Callable[[Path], None] | None) -> None:
    """Check, flush and rename the written temporary file; raise WriteError naming `path` on failure."""
    if not (tmp.is_symlink() or tmp.exists()):
        gone = not path.parent.is_dir()
        raise _error_for(path, f"the folder {path.parent} vanished" if gone else "the writer produced no file", False)
    if verify is not None:
        try:
            verify(tmp)
        except InferenceError as e:
            free = _free_bytes(path.parent)   # before the temporary file is removed and frees space
            detail = str(e).split(": ", 1)[-1]
            raise _error_for(path, f"incomplete after writing ({detail})",
                             free is not None and free < _NEARLY_FULL_BYTES) from None
    _fsync_file(tmp)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    _fsync_folder(path.parent)


@contextmanager
def atomic_output(path: str | os.PathLike, mode: int | None = None, make_parents: bool = True,
                  verify: Callable[[Path], None] | None | str = "auto") -> Iterator[Path]:
    """Yield a temporary path to write; on success it is verified, flushed and renamed to `path`; on any
    exception it is deleted.

        with atomic_output(out / "case.nii.gz", mode=0o644) as tmp:
            sitk.WriteImage(image, str(tmp))

    mode: permissions to set before the rename (e.g. 0o644 so a host user can read what a container
    wrote as root). verify: called with the temporary path before the rename, raising InferenceError
    when the file is incomplete; "auto" checks NIfTI files (`.nii`, `.nii.gz`) by their header, None
    checks nothing beyond the writer's own errors and fsync.
    An OSError of the writer or of the file system (disk full, read-only or vanished folder, I/O error),
    or a RuntimeError of the writer (SimpleITK), becomes WriteError (DiskFullError for ENOSPC/EDQUOT), naming `path`.
    """
    path = Path(path)
    if verify == "auto":
        verify = lambda tmp: _verify_by_ending(tmp, path)  # noqa: E731
    tmp = temporary_name(path)
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _finish(tmp, path, mode, verify)
    except OSError as e:
        raise _from_os_error(path, e) from None
    except RuntimeError as e:   # SimpleITK's writers raise RuntimeError with ITK's message
        raise _from_writer_error(path, e) from None
    finally:
        _remove(tmp)


def _from_writer_error(path: Path, e: RuntimeError) -> WriteError:
    lines = str(e).strip().splitlines()
    detail = lines[-1].strip() if lines else "the writer failed"
    free = _free_bytes(path.parent)
    return _error_for(path, detail, free is not None and free < _NEARLY_FULL_BYTES)


def _remove(tmp: Path) -> None:
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
    except OSError:   # the folder vanished or turned read-only: nothing more we can do
        pass


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    return write_bytes(path, text.encode())


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically, checking that every byte reached the file."""
    def complete(tmp: Path) -> None:
        if tmp.stat().st_size != len(data):
            raise InferenceError(f"{tmp}: holds {tmp.stat().st_size} of {len(data)} bytes")
    with atomic_output(path, verify=complete) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """`obj` as JSON (with a final newline) written atomically."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")
