"""Our stripped predictor agrees with nnU-Net's own nnUNetPredictor on the same model folder and files.

Plans name nnU-Net's torch resampling, so the only documented differences left (argmax on logits instead
of softmax, fp32 accumulation on CPU) must not change the labels: per-label Dice >= 0.99 for every label
with >= 1000 voxels in either output, and identical geometry.

Where labels do differ, it is nnU-Net's fp16 accumulation (used even on CPU): at image corners a voxel
is covered by one tile at a tiny Gaussian weight, which fp16 cannot resolve, and random-weight logits
have small margins between classes. Volumes are sized so that these corners stay a small part of them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from testsupport.model_folder import write_preset
from inference.api import segment_folder
from testsupport.nnunet_reference import (blob_volume, dice_per_label, geometry, oblique_direction, run_nnunet,
                              write_image)

# Wider than the `tiny` preset so that random weights give several large labels to compare.
FEATURES = (8, 16, 32)


def _set_transpose(model_dir: Path, forward: list[int]) -> None:
    plans = json.loads((model_dir / "plans.json").read_text())
    plans["transpose_forward"] = forward
    plans["transpose_backward"] = [forward.index(i) for i in range(3)]
    (model_dir / "plans.json").write_text(json.dumps(plans))


CASES = {
    # name: (model options, volume shape zyx, spacing xyz, origin, direction, tta)
    "anisotropic_oblique_origin": ({}, (24, 80, 70), (1.1, 1.3, 4.0), (10, -20, 5), oblique_direction(), False),
    "smaller_than_patch": ({}, (12, 30, 28), (1.5, 1.5, 3.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), False),
    "transpose_forward": ({"transpose": [2, 0, 1]}, (30, 60, 50), (2.0, 1.4, 2.5), (-3, 4, 7),
                          oblique_direction(-35, flip_x=False), False),
    "two_channels": ({"num_input_channels": 2}, (20, 64, 64), (1.5, 1.5, 3.0), (0, 0, 0),
                     (1, 0, 0, 0, 1, 0, 0, 0, 1), False),
    "ct_normalization": ({"normalization": "CTNormalization"}, (24, 96, 96), (1.5, 1.5, 3.0), (0, 0, 0),
                         (1, 0, 0, 0, 1, 0, 0, 0, 1), False),
    "two_fold_ensemble": ({"folds": (0, 1)}, (20, 64, 64), (1.2, 1.6, 3.5), (5, 5, 5),
                          (1, 0, 0, 0, 1, 0, 0, 0, 1), False),
    "tta_mirroring": ({}, (20, 64, 64), (1.5, 1.5, 3.0), (0, 0, 0), oblique_direction(10), True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_agrees_with_nnunet_predictor(name: str, tmp_path: Path) -> None:
    options, shape, spacing, origin, direction, tta = CASES[name]
    options = dict(options)
    transpose = options.pop("transpose", None)
    folds = options.get("folds", ("all",))
    model_dir = write_preset(tmp_path / "model", "tiny", features=FEATURES, **options)
    if transpose:
        _set_transpose(model_dir, transpose)
    channels = options.get("num_input_channels", 1)
    files = []
    for c in range(channels):
        volume = blob_volume(shape, seed=10 + c)
        if options.get("normalization") == "CTNormalization":
            volume = volume * 6 - 100  # HU-like: air below the lower clip bound, bright blobs above the upper
        files.append(write_image(tmp_path / "in" / f"case_{c:04d}.nii.gz", volume, spacing, origin, direction))

    reference_file = run_nnunet(model_dir, files, tmp_path / "nnunet", folds=[str(f) for f in folds],
                                use_mirroring=tta)
    results = segment_folder(tmp_path / "in", tmp_path / "ours", model_dir, device="cpu", precision="fp32", tta=tta)
    assert [r.ok for r in results] == [True], results[0].error

    ours_image = sitk.ReadImage(str(tmp_path / "ours" / "case.nii.gz"))
    reference_image = sitk.ReadImage(str(reference_file))
    assert geometry(ours_image) == geometry(reference_image)
    assert ours_image.GetPixelID() == sitk.sitkUInt8
    ours, reference = sitk.GetArrayFromImage(ours_image), sitk.GetArrayFromImage(reference_image)
    dice = dice_per_label(ours, reference)
    assert dice, "no label large enough to compare"
    assert min(dice.values()) >= 0.99, dice
    # The comparison must not be trivial: random weights here give several labels.
    assert len(np.unique(reference)) >= 2
