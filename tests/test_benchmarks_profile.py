"""benchmarks.flare.profile_case: per-stage seconds and peak memory of our predictor on one case."""
from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk

from testsupport.model_folder import write_preset
from benchmarks.flare.profile_case import main, markdown, profile
from inference.api import segment_folder


def test_profile_one_case(tmp_path):
    model = write_preset(tmp_path / "model", "tiny")
    img = sitk.GetImageFromArray((np.random.default_rng(0).random((10, 30, 28)) * 100).astype(np.float32))
    img.SetSpacing((1.5, 1.5, 3.0))
    case = tmp_path / "in" / "case_0000.nii.gz"
    case.parent.mkdir()
    sitk.WriteImage(img, str(case))
    out = tmp_path / "profiled"
    out.mkdir()
    start = time.perf_counter()
    res = profile(case, model, device="cpu", out_dir=out)
    wall = time.perf_counter() - start
    assert list(res["stages"]) == ["imports", "model_load", "read", "preprocess", "network", "export", "write"]
    assert all(s["seconds"] >= 0 and s["rss_peak_mib"] > 0 for s in res["stages"].values())
    assert res["image_size"] == [28, 30, 10] and res["device"].startswith("CPU: ")
    # the stages are disjoint stretches of the call, so together they fit inside its wall time
    assert 0 < res["total_seconds"] <= wall
    # profiling runs the production predictor: its segmentation equals segment_folder's
    segment_folder(case.parent, tmp_path / "plain", model_dir=model, device="cpu")
    profiled = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case.nii.gz")))
    plain = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain" / "case.nii.gz")))
    assert profiled.shape == (10, 30, 28) and np.array_equal(profiled, plain)
    text = markdown(res)
    assert "| Stage | Seconds | Peak RSS (MB) |" in text and "| network |" in text


def test_profile_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing_0000.nii.gz")]) == 2
    assert "no such file" in capsys.readouterr().err
