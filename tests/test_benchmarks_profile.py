"""benchmarks.flare.profile_case: per-stage seconds and peak memory of our predictor on one case."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk

from testsupport.model_folder import write_preset
from benchmarks.flare.profile_case import main, markdown, profile
import inference.timings
from inference.api import ModelSpec, segment_folder


def test_profile_one_case(tmp_path, monkeypatch):
    model = write_preset(tmp_path / "model", "tiny")
    img = sitk.GetImageFromArray((np.random.default_rng(0).random((10, 30, 28)) * 100).astype(np.float32))
    img.SetSpacing((1.5, 1.5, 3.0))
    case = tmp_path / "in" / "case_0000.nii.gz"
    case.parent.mkdir()
    sitk.WriteImage(img, str(case))
    out = tmp_path / "profiled"
    out.mkdir()
    # The predictor's stage clock (inference.timings) ticks one second per reading: each stage of the case
    # must then report exactly 1 s, the clock's two readings around it, under its own name.
    ticks = itertools.count()
    monkeypatch.setattr(inference.timings, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    res = profile(case, model, device="cpu", out_dir=out)
    assert list(res["stages"]) == ["imports", "model_load", "read", "preprocess", "network", "export", "write"]
    case_stages = {k: v["seconds"] for k, v in res["stages"].items() if k not in ("imports", "model_load")}
    assert case_stages == {"read": 1.0, "preprocess": 1.0, "network": 1.0, "export": 1.0, "write": 1.0}
    assert res["total_seconds"] == sum(s["seconds"] for s in res["stages"].values())
    assert all(s["rss_peak_mib"] > 0 for s in res["stages"].values())
    assert res["image_size"] == [28, 30, 10] and res["device"].startswith("CPU: ")
    # profiling runs the production predictor: its segmentation equals segment_folder's
    segment_folder(case.parent, tmp_path / "plain", ModelSpec(model, device="cpu"))
    profiled = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case.nii.gz")))
    plain = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain" / "case.nii.gz")))
    assert profiled.shape == (10, 30, 28) and np.array_equal(profiled, plain)
    text = markdown(res)
    assert "| Stage | Seconds | Peak RSS (MB) |" in text and "| network |" in text


def test_profile_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing_0000.nii.gz")]) == 2
    assert "no such file" in capsys.readouterr().err
