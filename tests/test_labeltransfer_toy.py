"""Pieces of the toy reproduction that are cheap to check: trainer discovery, simulated motion, scoring."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from flare.labels import ORGANS
from labeltransfer import toy_reproduction as toy
from _labeltransfer_volumes import make_subject


def test_nnunet_finds_the_toy_trainer(monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    monkeypatch.setenv("nnUNet_extTrainer", str(toy.TRAINER_DIR))
    cls = recursive_find_trainer_class_by_name(toy.TRAINER)
    assert cls.__name__ == "nnUNetTrainerToy" and issubclass(cls, nnUNetTrainer)


def test_sequence_motion_is_seeded_and_keeps_extent():
    img, lab = make_subject("T2", size=(40, 32, 16), spacing=(2.0, 2.0, 3.0))
    t1, ref1 = toy.sequence_motion(7, img)
    t2, ref2 = toy.sequence_motion(7, img)
    assert t1.GetParameters() == t2.GetParameters() and ref1.GetSpacing() == ref2.GetSpacing()
    angles = np.rad2deg(t1.GetParameters()[:3])
    assert np.all(np.abs(angles) <= 3.0) and np.all(np.abs(t1.GetParameters()[3:]) <= 4.0)
    extent = np.array(img.GetSize()) * img.GetSpacing()
    new_extent = np.array(ref1.GetSize()) * ref1.GetSpacing()
    assert np.all(new_extent >= extent) and np.all(new_extent <= extent + np.array(ref1.GetSpacing()))
    moved_img, moved_lab = toy.moved(img, lab, t1, ref1)
    assert moved_lab.GetSize() == ref1.GetSize() and moved_lab.GetPixelID() == lab.GetPixelID()


def test_local_flare_scores_follow_the_official_rules():
    _, gt = make_subject("T1", size=(40, 32, 16), spacing=(2.0, 2.0, 3.0))
    s = toy._score_case(gt, gt)
    assert all(s[f"{o.short}_DSC"] == 1.0 and s[f"{o.short}_NSD"] == 1.0 for o in ORGANS)
    arr = sitk.GetArrayFromImage(gt)
    arr[arr == 1] = 0                           # liver missing in the prediction: 0 / 0
    arr[(arr == 3) & (np.arange(arr.shape[2]) % 2 == 0)] = 0  # spleen: every other x column removed
    pred = sitk.GetImageFromArray(arr)
    pred.CopyInformation(gt)
    s = toy._score_case(pred, gt)
    assert s["Liver_DSC"] == 0.0 and s["Liver_NSD"] == 0.0
    g = sitk.GetArrayFromImage(gt) == 3
    p = arr == 3
    assert s["Spleen_DSC"] == round(2 * (g & p).sum() / (g.sum() + p.sum()), 4)
    assert s["RK_DSC"] == 1.0
