"""benchmarks.compare_nnunet helpers: Dice agreement, the nnU-Net-default view of a model, the report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.compare_nnunet import (
    RunStats,
    dice_per_label,
    model_folds,
    nnunet_command,
    report,
    with_default_resampling,
)
from testsupport.model_folder import write_preset


def test_dice_per_label_by_hand():
    a = np.array([[1, 1, 2, 0], [0, 0, 2, 2]])
    b = np.array([[1, 0, 2, 0], [0, 0, 2, 3]])
    d = dice_per_label(a, b, [1, 2, 3, 4])
    assert d[1] == pytest.approx(2 * 1 / 3)      # |A|=2, |B|=1, overlap 1
    assert d[2] == pytest.approx(2 * 2 / 5)      # |A|=3, |B|=2, overlap 2
    assert d[3] == 0.0 and d[4] is None          # only in b; in neither
    with pytest.raises(ValueError, match="differ in shape"):
        dice_per_label(a, b[:1], [1])


def test_default_resampling_view_shares_weights(tmp_path):
    m = write_preset(tmp_path / "m", "tiny", resampling="torch", folds=(0, 1))
    v = with_default_resampling(m, tmp_path / "v")
    cfg = json.loads((v / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert cfg["resampling_fn_probabilities"] == "resample_data_or_seg_to_shape"
    assert cfg["architecture"] == json.loads((m / "plans.json").read_text())["configurations"]["3d_fullres"]["architecture"]
    assert (v / "fold_0").is_symlink() and (v / "fold_0").resolve() == (m / "fold_0").resolve()
    assert model_folds(v) == ["0", "1"]
    with pytest.raises(FileNotFoundError, match="no fold_"):
        model_folds(tmp_path)


def test_nnunet_command_tta_switch(tmp_path):
    on = nnunet_command(tmp_path / "i", tmp_path / "o", tmp_path / "m", ["all"], tta=True)
    off = nnunet_command(tmp_path / "i", tmp_path / "o", tmp_path / "m", ["all"], tta=False)
    assert "--disable_tta" not in on and off[-1] == "--disable_tta"
    assert on[on.index("-f") + 1] == "all" and on[on.index("-device") + 1] == "cpu"


def test_report_checks_targets():
    ours = RunStats("ours", ["x"], 0, 9.5, 9.0, 1500.0, "l",
                    {"startup": {"imports": 1.5, "model_load": 0.3},
                     "seconds": {"read": 0.2, "preprocess": 0.3, "network": 7.0, "export": 0.6, "write": 0.2}})
    nn = RunStats("nnU-Net", ["y"], 0, 31.0, 30.0, 4000.0, "l")
    text = report([ours, nn], {"nnU-Net": {1: 0.5, 2: None}}, {0: "background", 1: "liver", 2: "spleen"},
                  "CPU: test", "tiny", 2, "1.0 / 2.0")
    assert "| ours / nnU-Net time (no TTA) | 0.30 | <= 0.33 | yes |" in text
    assert "| start-up: imports + model load (s) | 1.80 | <= 3.0 | yes |" in text
    assert "| read + preprocess + export + write (s) | 1.30 | <= 1.5 | yes |" in text
    assert "| 1 liver | - | 0.5000 |" in text and "| 2 spleen | - | - |" in text
    assert "Load average (1 min) before/after: 1.0 / 2.0" in text


def test_report_shows_dice_against_truth_per_run():
    ours = RunStats("ours", ["x"], 0, 5.0, 4.8, 1200.0, "l")
    nn = RunStats("nnU-Net", ["y"], 1, 6.0, None, 900.0, "l")
    text = report([ours, nn], {}, {0: "background", 1: "liver"}, "CPU: test", "m", 2,
                  truth_dice={"ours": 0.87814})
    assert "| ours | 4.80 | 5.00 | 1,200 | 0 | 0.8781 |" in text
    assert "| nnU-Net | - | 6.00 | 900 | 1 | - |" in text          # no output: no Dice


def test_phantom_case_has_the_case_grid_and_its_truth(tmp_path, monkeypatch):
    """The compared case is a T1 phantom on the benchmark's grid with its true labels beside it; an
    existing pair is kept (the generator is deterministic, and nnU-Net reruns reuse the inputs)."""
    import SimpleITK as sitk
    from benchmarks import compare_nnunet as cmp
    monkeypatch.setattr(cmp, "CASE_SIZE", (64, 58, 16))              # small, same spacing
    cmp.write_phantom_case(tmp_path / "in", tmp_path / "truth")
    img = sitk.ReadImage(str(tmp_path / "in" / f"{cmp.CASE}_0000.nii.gz"))
    lab = sitk.ReadImage(str(tmp_path / "truth" / f"{cmp.CASE}.nii.gz"))
    assert img.GetSize() == lab.GetSize() == (64, 58, 16)
    assert np.allclose(img.GetSpacing(), cmp.CASE_SPACING) and np.allclose(lab.GetOrigin(), img.GetOrigin())
    assert set(np.unique(sitk.GetArrayFromImage(lab))) >= {0, 1}      # background and at least the liver
    assert not list((tmp_path / "in").glob(".*"))                     # no temporary file left behind
    stamp = (tmp_path / "in" / f"{cmp.CASE}_0000.nii.gz").stat().st_mtime_ns
    cmp.write_phantom_case(tmp_path / "in", tmp_path / "truth")
    assert (tmp_path / "in" / f"{cmp.CASE}_0000.nii.gz").stat().st_mtime_ns == stamp
