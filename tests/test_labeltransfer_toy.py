"""Pieces of the toy reproduction that are cheap to check: trainer discovery and the phantom steps."""
from __future__ import annotations

import json

from labeltransfer import toy_reproduction as toy


def test_nnunet_finds_the_toy_trainer(monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    monkeypatch.setenv("nnUNet_extTrainer", str(toy.TRAINER_DIR))
    cls = recursive_find_trainer_class_by_name(toy.TRAINER)
    assert cls.__name__ == "nnUNetTrainerToy" and issubclass(cls, nnUNetTrainer)


def test_cheap_steps_on_one_phantom_subject(tmp_path):
    """data + propagation on one coarse subject: T1 and T2 on their own grids; affine correction beats
    plain resampling against the T2 truth; the tables are written."""
    geometry = json.dumps({"inplane_range": [3.5, 4.0], "slice_range": [6, 7]})
    assert toy.main(["--work", str(tmp_path), "--steps", "data,propagation", "--n-ct", "1", "--n-pool", "1",
                     "--n-test", "0", "--phantom-geometry", geometry]) == 0
    assert sorted(p.name for p in (tmp_path / "pool" / "images").iterdir()) == [
        "s1000_T1_0000.nii.gz", "s1000_T2_0000.nii.gz"]
    res = json.loads((tmp_path / "results" / "propagation.json").read_text())
    assert res["affine"]["foreground_dice"] > res["none"]["foreground_dice"] + 0.05
    assert res["affine"]["mean_organ_dice"] > res["none"]["mean_organ_dice"]
    # registration gets close to what perfect registration gives on these coarse grids
    assert res["affine"]["foreground_dice"] > res["ceiling"]["foreground_dice"] - 0.02
    assert "| **mean** |" in (tmp_path / "results" / "propagation.md").read_text()
    assert (tmp_path / "raw" / "Dataset901_ToyCT" / "dataset.json").exists()


def test_narrow_plans_rewrites_only_the_feature_widths(tmp_path):
    plans = {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {
        "data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [56, 128, 160],
        "architecture": {"arch_kwargs": {"n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320]}}}}}
    f = tmp_path / "nnUNetPlans.json"
    f.write_text(json.dumps(plans))
    toy.narrow_plans(f, 16)
    out = json.loads(f.read_text())
    assert out["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] == \
        [16, 32, 64, 64, 64, 64]
    out["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = \
        plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"]
    assert out == plans                      # nothing else changed (data identifier, patch)


def test_nnunet_subprocesses_can_import_the_project(tmp_path, monkeypatch):
    """nnU-Net's trainer subprocesses import training.trainer (the toy trainer's base) without an install."""
    import os
    from pathlib import Path
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = toy.nnunet_env(tmp_path)
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert paths[0] == str(Path(toy.__file__).resolve().parent.parent) and "/elsewhere" in paths
    assert env["nnUNet_extTrainer"] == str(toy.TRAINER_DIR)

