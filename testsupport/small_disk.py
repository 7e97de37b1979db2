"""A real small file system for tests of full-disk handling: a tmpfs of a given size, mounted for the
duration of a `with` block (root only; `SmallDiskUnavailable` where mounting is not permitted, so a test
can skip cleanly)."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SmallDiskUnavailable(Exception):
    """This machine does not let us mount a tmpfs (not root, or no mount permission in the container)."""


@contextmanager
def small_disk(where: Path, size_bytes: int, read_only: bool = False) -> Iterator[Path]:
    """Mount a tmpfs of `size_bytes` (rounded up to pages by the kernel) at `where`; unmount after."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size_bytes},mode=0777" + (",ro" if read_only else "")
    if os.geteuid() != 0:
        raise SmallDiskUnavailable("not root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SmallDiskUnavailable(done.stderr.strip() or f"mount exited {done.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@contextmanager
def small_disk_or_skip(where: Path, size_bytes: int, read_only: bool = False) -> Iterator[Path]:
    """small_disk, or the calling test skipped (with the reason) where no tmpfs can be mounted."""
    import pytest
    disk = small_disk(where, size_bytes, read_only)
    try:
        folder = disk.__enter__()
    except SmallDiskUnavailable as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    try:
        yield folder
    finally:
        disk.__exit__(None, None, None)
