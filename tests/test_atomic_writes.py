"""inference/files/atomic.py: every write is verified or undone. Failures are injected mid-write (an
OSError from the writer or from fsync, a writer that truncates silently as SimpleITK does on a full disk,
a folder that vanishes) and provoked for real (a full tmpfs, a read-only one, SIGKILL mid-write); after
each, nothing is left under the final name and no temporary file is left behind."""
from __future__ import annotations

import errno
import gzip
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inference.files import atomic
from inference.files.atomic import DiskFullError, WriteError, atomic_output, write_bytes, write_json, write_text
from inference.files.writing import write_segmentation
from testsupport.small_disk import small_disk_or_skip


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _reference() -> sitk.Image:
    ref = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    ref.SetSpacing((1.5, 1.5, 3.0))
    return ref


def _labels(seed: int, shape=(20, 64, 64)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 14, shape, dtype=np.uint8)


# --- success --------------------------------------------------------------------------------------------

def test_success_renames_sets_mode_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    write_text(tmp_path / "t.txt", "")            # an empty text is a complete text
    assert (tmp_path / "t.txt").read_bytes() == b""
    with atomic_output(tmp_path / "m.bin", mode=0o640) as tmp:
        tmp.write_bytes(b"xyz")
    assert (tmp_path / "m.bin").stat().st_mode & 0o777 == 0o640
    assert _names(tmp_path) == ["m.bin", "out.json", "t.txt"]


def test_label_map_is_verified_and_readable(tmp_path):
    labels = _labels(0)
    write_segmentation(labels, _reference(), tmp_path / "case.nii.gz")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "case.nii.gz"))), labels)
    assert _names(tmp_path) == ["case.nii.gz"]


# --- injected failures ----------------------------------------------------------------------------------

def test_exception_mid_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "r.csv"
    target.write_text("old\n")
    with pytest.raises(KeyError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise KeyError("boom")
    assert target.read_text() == "old\n"
    assert _names(tmp_path) == ["r.csv"]


def test_enospc_from_the_writer_is_a_disk_full_error_naming_the_file(tmp_path, monkeypatch):
    def half_then_enospc(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(Path, "write_bytes", half_then_enospc)
    target = tmp_path / "report.json"
    with pytest.raises(DiskFullError) as e:
        write_json(target, {"cases": list(range(1000))})
    assert str(e.value).startswith(f"{target}: not written: no space left on device")
    assert _names(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EIO, errno.EDQUOT])
def test_fsync_error_is_reported_and_undone(tmp_path, monkeypatch, code):
    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    target = tmp_path / "x.txt"
    with pytest.raises(DiskFullError if code == errno.EDQUOT else WriteError) as e:
        write_text(target, "data")
    assert str(e.value).startswith(f"{target}: not written: ")
    if code == errno.EIO:
        assert "Input/output error" in str(e.value) and not isinstance(e.value, DiskFullError)
    assert _names(tmp_path) == []


def test_silently_truncated_nifti_is_caught(tmp_path, monkeypatch):
    """SimpleITK's writer on a full disk: prints an error, returns normally, leaves a short file."""
    real_write = sitk.WriteImage

    def truncating_write(image, name, *args, **kwargs):
        real_write(image, name, *args, **kwargs)
        data = Path(name).read_bytes()
        Path(name).write_bytes(data[: len(data) // 3])
    monkeypatch.setattr(sitk, "WriteImage", truncating_write)
    target = tmp_path / "case.nii.gz"
    with pytest.raises(WriteError) as e:       # plenty of free space here: incomplete, not "disk full"
        write_segmentation(_labels(1), _reference(), target)
    assert not isinstance(e.value, DiskFullError)
    assert str(e.value).startswith(f"{target}: not written: incomplete after writing")
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 0)   # the same on a full disk
    with pytest.raises(DiskFullError):
        write_segmentation(_labels(1), _reference(), target)
    assert _names(tmp_path) == []


def test_empty_nifti_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(sitk, "WriteImage", lambda image, name, *a, **k: Path(name).write_bytes(b""))
    with pytest.raises(WriteError, match="case.nii.gz: not written: incomplete after writing"):
        write_segmentation(_labels(2), _reference(), tmp_path / "case.nii.gz")
    assert _names(tmp_path) == []


def test_folder_vanishing_mid_write(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(WriteError, match=f"{folder / 'a.txt'}: not written: the folder {folder} vanished"):
        with atomic_output(folder / "a.txt", make_parents=False) as tmp:
            tmp.write_text("x")
            tmp.unlink()
            folder.rmdir()
    assert not folder.exists()


def test_writer_that_writes_nothing(tmp_path):
    with pytest.raises(WriteError, match="the writer produced no file"):
        with atomic_output(tmp_path / "a.json"):
            pass
    assert _names(tmp_path) == []


# --- real file systems ----------------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    with small_disk_or_skip(tmp_path / "disk", 64 * 1024) as folder:
        yield folder


def test_full_tmpfs_label_maps_are_complete_or_refused(tiny_disk):
    """12 label maps of ~15 kB each onto 64 kB: the first fit, the rest raise DiskFullError; every
    file present reads back exactly, no temporary file is left."""
    written, refused = [], []
    for i in range(12):
        target = tiny_disk / f"case{i:02d}.nii.gz"
        try:
            write_segmentation(_labels(i, (8, 48, 48)), _reference(), target)
            written.append(i)
        except DiskFullError as e:
            assert str(e).startswith(f"{target}: not written: no space left on device")
            refused.append(i)
    assert written and refused
    assert _names(tiny_disk) == [f"case{i:02d}.nii.gz" for i in written]
    for i in written:
        read = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny_disk / f"case{i:02d}.nii.gz")))
        assert np.array_equal(read, _labels(i, (8, 48, 48)))


def test_full_tmpfs_text_and_json(tiny_disk):
    (tiny_disk / "filler").write_bytes(b"\0" * (60 * 1024))
    with pytest.raises(DiskFullError, match="big.json: not written: no space left on device"):
        write_json(tiny_disk / "big.json", {"x": "y" * 20000})
    assert _names(tiny_disk) == ["filler"]


def test_read_only_file_system(tmp_path):
    with small_disk_or_skip(tmp_path / "ro", 64 * 1024, read_only=True) as folder:
        with pytest.raises(WriteError, match="a.json: not written: Read-only file system"):
            write_json(folder / "a.json", {})
        with pytest.raises(WriteError, match="case.nii.gz: not written: "):
            write_segmentation(_labels(3), _reference(), folder / "case.nii.gz")
        assert _names(folder) == []


# --- a killed writer ------------------------------------------------------------------------------------

_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from inference.files.atomic import atomic_output
    with atomic_output(Path(sys.argv[1])) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"partial" * 1000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
""")


def test_sigkill_mid_write_leaves_no_file_under_the_final_name(tmp_path):
    target = tmp_path / "out" / "case.nii.gz"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parent.parent, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    leftovers = _names(target.parent)
    assert leftovers == [f".tmp_{proc.pid}_case.nii.gz"]   # hidden: case discovery never takes it
    write_segmentation(_labels(4), _reference(), target)      # the rerun completes
    assert gzip.decompress(target.read_bytes())[344:348] == b"n+1\0"


def test_write_bytes_checks_the_size(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: open(self, "wb").write(data[:-1]))
    with pytest.raises(WriteError, match="b.bin: not written: incomplete after writing"):
        write_bytes(tmp_path / "b.bin", b"12345")
    assert _names(tmp_path) == []
