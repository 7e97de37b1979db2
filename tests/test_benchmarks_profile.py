"""benchmarks.profile_case: per-stage seconds and peak memory of our predictor on one case."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("inference.api", reason="our predictor (inference/) is not in this checkout yet")

from testsupport.model_folder import write_preset
from benchmarks.profile_case import main, markdown, profile


def test_profile_one_case(tmp_path):
    model = write_preset(tmp_path / "model", "tiny")
    img = sitk.GetImageFromArray((np.random.default_rng(0).random((10, 30, 28)) * 100).astype(np.float32))
    img.SetSpacing((1.5, 1.5, 3.0))
    case = tmp_path / "in" / "case_0000.nii.gz"
    case.parent.mkdir()
    sitk.WriteImage(img, str(case))
    res = profile(case, model, device="cpu")
    assert list(res["stages"]) == ["imports", "model_load", "read", "preprocess", "network", "export", "write"]
    assert all(s["seconds"] >= 0 and s["rss_peak_mib"] > 0 for s in res["stages"].values())
    assert res["image_size"] == [28, 30, 10] and res["device"].startswith("CPU: ")
    assert res["total_seconds"] == pytest.approx(sum(s["seconds"] for s in res["stages"].values()))
    text = markdown(res)
    assert "| Stage | Seconds | Peak RSS (MB) |" in text and "| network |" in text


def test_profile_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing_0000.nii.gz")]) == 2
    assert "no such file" in capsys.readouterr().err
