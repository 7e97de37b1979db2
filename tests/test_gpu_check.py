"""benchmarks.flare.gpu_check: its rehearsal on the CPU (`--device cpu`, tiny sizes) goes through every step
of the GPU check and exits 0, its agreement check fails on labels that differ, its nibabel path
(benchmarks.flare.nifti_predict) gives the predictor's labels, and --prepare-wheels refuses what would
not travel."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import benchmarks.flare.gpu_check as gpu_check
from benchmarks.common import REPO
import benchmarks.flare.gpu_wheels as gpu_wheels


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The GPU check rehearsed on the CPU, as CI and a clean clone run it: the command line, in a process."""
    out = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.flare.gpu_check", "--out", str(out), "--device", "cpu",
                           "--budget-s", "400"], cwd=REPO, capture_output=True, text=True, timeout=900)
    return proc, out


def test_rehearsal_runs_every_step_and_exits_0(rehearsal):
    proc, out = rehearsal
    report = json.loads((out / "gpu_check.json").read_text())
    steps = report["steps"]
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert list(steps) == ["setup", "cuda_tests", "agreement", "profile", "table6", "sampler_period"]
    assert all(s["status"] == "ok" for s in steps.values()), {k: v.get("summary") for k, v in steps.items()}
    assert steps["setup"]["simpleitk"] is False   # the GPU machine's I/O: nibabel
    # CUDA tests are collected and reported as skipped on a CPU; none fails
    tests = steps["cuda_tests"]["tests"]
    assert tests and {t["outcome"] for t in tests} == {"skipped"}
    assert "test_gpu_cuda.py" in steps["cuda_tests"]["files"]
    # each model: the CPU reference, then the torch engine without and with the budget
    rows = steps["agreement"]["rows"]
    assert [r["model"] for r in rows] == ["default model (weights/)"] * 3 + ["tiny preset, random weights"] * 3
    assert [r.get("reference", False) for r in rows] == [True, False, False] * 2
    # the default model's reference is the OpenVINO path: an engine independent of the torch runs it checks
    assert [r["engine"] for r in rows[:3]] == ["openvino", "torch", "torch"]
    assert all(r["lowest_dice"] >= gpu_check.AGREEMENT_LABEL_DICE and r["agreement"] >= gpu_check.AGREEMENT_VOXELS
               for r in rows)
    assert all(r["labels_present"] >= 8 for r in rows[:3])   # the default model: most organs, each one Dice-checked
    prof = steps["profile"]["profile"]
    assert list(prof["stages"]) == ["imports", "model_load", "read", "preprocess", "network", "export", "write"]
    assert prof["image_size"] == [56, 48, 16]
    t6 = steps["table6"]
    assert t6["done"] == {"ours": ["dry_small", "dry_large"]}
    assert t6["ours_command"].endswith("-m benchmarks.flare.nifti_predict --device cpu")   # the GPU machine's I/O path


def test_rehearsal_files_name_the_environment(rehearsal):
    _, out = rehearsal
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_check.json", "gpu_check.md", "table6_ours_Efficiency.csv", "table6_ours_memory.png"]
    assert len(files) <= gpu_check.MAX_FILES
    import torch
    env = json.loads((out / "gpu_check.json").read_text())["environment"]
    assert env["torch"] == torch.__version__ and env["rehearsal"] is True and env["device"] == "cpu"
    assert f"torch {torch.__version__}; CUDA {torch.version.cuda or '-'}" in env["line"] and "REHEARSAL" in env["line"]
    assert env["line"] in (out / "gpu_check.md").read_text()
    with open(out / "table6_ours_Efficiency.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["Name"] for r in rows] == ["dry_large.nii.gz", "dry_small.nii.gz"]  # load_json.py's Name (docs/efficiency.md)
    assert all(r["Environment"] == env["line"] and r["Output"] == "ok" for r in rows)


def test_agreement_fails_on_labels_that_differ_from_the_reference():
    reference = np.zeros((4, 10, 10), np.uint8)
    reference[1:3, 2:8, 2:8] = 1
    reference[0, 0:2, 0:2] = 2
    assert gpu_check.compare_labels(reference.copy(), reference) == {
        "agreement": 1.0, "mean_dice": 1.0, "lowest_dice": 1.0, "labels_present": 2, "passed": True}
    lost = reference.copy()
    lost[lost == 2] = 0   # a small organ missed: 4 of 400 voxels, so voxel agreement alone would pass
    verdict = gpu_check.compare_labels(lost, reference)
    assert verdict["agreement"] == 0.99 and verdict["lowest_dice"] == 0.0 and verdict["passed"] is False
    shifted = np.roll(reference, 1, axis=2)
    verdict = gpu_check.compare_labels(shifted, reference)
    assert verdict["passed"] is False and verdict["lowest_dice"] == 0.5   # label 2: 2 of its 4 voxels still overlap
    assert verdict["mean_dice"] == pytest.approx((2 * 60 / 144 + 0.5) / 2)   # label 1: 60 of its 72 voxels overlap


def test_nifti_predict_prints_each_case_and_matches_the_predictor(tmp_path, capsys):
    """The nibabel path (the GPU machine's), run without -q: its per-case lines, and the same labels and
    geometry as inference.api.segment_folder."""
    import SimpleITK as sitk

    from benchmarks.flare import nifti_predict
    from inference.api import ModelSpec, segment_folder
    inputs = tmp_path / "in"
    inputs.mkdir()
    sample = REPO / "samples" / "inputs" / "phantom_0001_0000.nii.gz"
    (inputs / sample.name).symlink_to(sample)
    assert nifti_predict.main(["-i", str(inputs), "-o", str(tmp_path / "nib"), "--device", "cpu", "--nibabel"]) == 0
    out = capsys.readouterr().out
    assert "phantom_0001: ok -> " in out and "read " in out and "1 case(s) on cpu with nibabel I/O" in out
    segment_folder(inputs, tmp_path / "sitk", ModelSpec(device="cpu"))
    ours = sitk.ReadImage(str(tmp_path / "nib" / "phantom_0001.nii.gz"))
    ref = sitk.ReadImage(str(tmp_path / "sitk" / "phantom_0001.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(ref))
    assert ours.GetSize() == ref.GetSize() and np.allclose(ours.GetSpacing(), ref.GetSpacing())
    assert np.allclose(ours.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    assert np.allclose(ours.GetDirection(), ref.GetDirection(), atol=1e-6)


def test_nibabel_direction_is_simpleitks(tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    from benchmarks.flare.nifti_io import itk_direction
    from testsupport.nnunet_reference import oblique_direction
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetDirection(oblique_direction())
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(image, str(path))
    assert np.allclose(itk_direction(nib.load(str(path))), sitk.ReadImage(str(path)).GetDirection(), atol=1e-6)


def fake_download(size):
    def download(specs, dest, log):
        for spec in specs:
            (dest / f"{spec.split('==')[0]}-1.0-py3-none-any.whl").write_bytes(b"\0" * size)
        return 0
    return download


def test_prepare_wheels_refuses_over_the_travel_limit(tmp_path, monkeypatch, capsys):
    tree, _ = gpu_wheels.travelling_tree_bytes()
    monkeypatch.setattr(gpu_wheels, "TRAVEL_LIMIT_BYTES", tree + 3 * 1000)
    assert gpu_wheels.prepare_wheels(tmp_path / "w", download=fake_download(1000)) == 2   # 5 wheels: over
    assert "exceeds" in capsys.readouterr().out and not list((tmp_path / "w").glob("*.whl"))
    assert gpu_wheels.prepare_wheels(tmp_path / "w", download=fake_download(500)) == 0    # 2,500: fits
    assert len(list((tmp_path / "w").glob("*.whl"))) == len(gpu_wheels.CORE_WHEELS)
    out = capsys.readouterr().out
    assert "outside the repository" in out and "of the" in out


def test_wheels_are_pinned_to_the_tested_versions():
    import importlib.metadata
    assert f"nibabel=={importlib.metadata.version('nibabel')}" in gpu_wheels.pinned(gpu_wheels.CORE_WHEELS)
    assert gpu_wheels.pinned(["no-such-package-xyz"]) == ["no-such-package-xyz"]


def test_table6_cuts_runs_that_do_not_fit_the_budget(tmp_path, monkeypatch):
    import benchmarks.flare.harness as harness
    calls = []
    monkeypatch.setattr(harness, "run_case", lambda *a, **k: calls.append(a[0]))
    image = gpu_check.write_volume(tmp_path, "c1", (20, 18, 6), seed=0, spacing_xyz=(1.5, 1.5, 3.0))
    clock = gpu_check.Clock(50)   # the first estimate is 30 s, and a run starts only if twice it fits
    res = gpu_check.table6([("c1", (20, 18, 6), lambda: image)], tmp_path, None, "cpu", {}, tmp_path / "t6", clock, 0, spec=None,
                           report=None, simpleitk=True)
    assert calls == [] and res["done"] == {"ours": []}
    assert res["skipped"][0].startswith("ours/c1 (estimate 30 s") and "cut for time" in res["summary"]
