"""A full output disk, for the predictor (`python -m inference`, `segment_folder`) and the cohort tool
(`labeltransfer pseudolabel`): exit code 1, every case either complete and readable or named with a
no-space message, the run stopped after the first full write, no partial or temporary file left, and a
rerun with space completes the folder. On a real tmpfs where it can be mounted (root), else with the
failure injected as SimpleITK shows it (a short file, no error) on a disk with no free space left."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inference.api import ModelSpec, segment_folder
from inference.files import atomic
from labeltransfer.__main__ import main as labeltransfer_main
from testsupport.model_folder import write_preset
from testsupport.nnunet_reference import blob_volume, write_image
from testsupport.predictor_cli import run
from testsupport.small_disk import small_disk_or_skip

CASES = [f"c{i:02d}" for i in range(12)]
# 12x40x40 label maps of the tiny model take one 4 kB page each on tmpfs (plus the temporary file
# while written): 24 kB hold about 5 of 12.
DISK_BYTES = 24 * 1024


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_preset(tmp_path_factory.mktemp("model") / "m", "tiny")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    for i, case in enumerate(CASES):
        write_image(folder / f"{case}_0000.nii.gz", blob_volume((12, 40, 40), seed=i), (1.5, 1.5, 3.0))
    return folder


@pytest.fixture(scope="module")
def clean(tmp_path_factory, model_dir, inputs) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("clean")
    results = segment_folder(inputs, out, ModelSpec(model_dir, device="cpu"))
    assert all(r.ok for r in results)
    return {case: sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz"))) for case in CASES}


@pytest.fixture
def disk(tmp_path):
    with small_disk_or_skip(tmp_path / "disk", DISK_BYTES) as folder:
        yield folder


def _grow(folder: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


def _check_outputs(out: Path, clean: dict, extra: tuple[str, ...] = ()) -> list[str]:
    """The label files present, each read back equal to the clean run's; nothing else in the folder."""
    names = sorted(p.name for p in out.iterdir())
    labels = [n for n in names if n not in extra]
    assert all(n.endswith(".nii.gz") and not n.startswith(".") for n in labels), names
    for name in labels:
        case = name[: -len(".nii.gz")]
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / name))), clean[case])
    return [n[: -len(".nii.gz")] for n in labels]


def test_predictor_cli_on_a_full_disk(disk, model_dir, inputs, clean, capsys):
    out = disk / "out"
    code, stdout, err = run(["-i", inputs, "-o", out, "-m", model_dir, "--device", "cpu"], capsys)
    assert code == 1
    done = _check_outputs(out, clean)
    assert 0 < len(done) < len(CASES)
    assert done == CASES[: len(done)]                     # in order, then the disk filled up
    full = CASES[len(done)]
    assert f"{full}: FAILED: {out / (full + '.nii.gz')}: not written: no space left on device" in err
    for case in CASES[len(done) + 1:]:
        assert f"{case}: FAILED: {inputs / (case + '_0000.nii.gz')}: not attempted: the output folder " \
               f"{out} is on a full disk (writing {full} failed)" in err
    assert f"stopped early: the output folder {out} is on a full disk (writing {full} failed); " \
           f"{len(CASES) - len(done) - 1} case(s) not attempted" in err
    assert f"{len(CASES) - len(done)} of {len(CASES)} case(s) failed" in err
    for case in done:
        assert f"{case}: ok" in stdout
    _grow(disk, 1 << 20)                                  # space freed: the rerun completes the folder
    code, _, _ = run(["-i", inputs, "-o", out, "-m", model_dir, "--device", "cpu"], capsys)
    assert code == 0 and _check_outputs(out, clean) == CASES


def test_pseudolabel_on_a_full_disk_then_resumed(disk, model_dir, inputs, clean, capsys):
    out = disk / "labels"
    code = labeltransfer_main(["pseudolabel", str(inputs), str(out), "-m", str(model_dir), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 1
    done = _check_outputs(out, clean)
    assert 0 < len(done) < len(CASES)
    assert "no space left on device" in printed and "not attempted" in printed
    assert "report NOT written" in printed or (out / "pseudolabel_part0of1.json").is_file()
    assert "stopped early:" in printed
    _grow(disk, 1 << 20)
    code = labeltransfer_main(["pseudolabel", str(inputs), str(out), "-m", str(model_dir), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"{len(done)} already done, {len(CASES) - len(done)} to predict" in printed
    assert _check_outputs(out, clean, extra=("pseudolabel_part0of1.json",)) == CASES


def test_segment_folder_with_a_silently_failing_writer(tmp_path, model_dir, inputs, clean, monkeypatch):
    """Without a mountable tmpfs: SimpleITK's behaviour on a full disk injected (after 4 files every write
    leaves an empty file and raises nothing) while the file system reports no free space."""
    real_write, calls = sitk.WriteImage, []

    def filling_write(image, name, *args, **kwargs):
        calls.append(name)
        if len(calls) <= 4:
            return real_write(image, name, *args, **kwargs)
        Path(name).write_bytes(b"")
    monkeypatch.setattr(sitk, "WriteImage", filling_write)
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 0 if len(calls) > 4 else 1 << 30)
    out = tmp_path / "out"
    results = segment_folder(inputs, out, ModelSpec(model_dir, device="cpu"))
    assert [r.ok for r in results] == [True] * 4 + [False] * 8
    assert results[4].disk_full and "no space left on device" in results[4].error
    assert all("not attempted" in r.error for r in results[5:])
    assert len(calls) == 5                                    # nothing run after the full disk
    assert _check_outputs(out, clean) == CASES[:4]
