"""Our stripped predictor agrees with nnU-Net's own nnUNetPredictor on the same model folder and files,
on both engines: the torch engine (the checkpoint) and the numpy engine (the same weights as OpenVINO IR,
written by `python -m inference.weights import --ir`), both in fp32.

Plans name nnU-Net's torch resampling, so the documented differences left are argmax on logits instead
of softmax (the same argmax) and float32 accumulation of the tile logits. nnU-Net sums them in a
float16 buffer, even on the CPU, which cannot resolve the small Gaussian weights at image faces and
flips labels there; the reference here runs nnU-Net's own code with that buffer made float32
(testsupport.nnunet_reference.float32_logits). Then every foreground label must be present in both
outputs and labelled on the same voxels, up to MAX_DIFFERING_VOXELS per label (the order in which a
2-fold ensemble's logits are summed), and the geometry must be identical.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inference.api import ModelSpec, segment_folder
from inference.weights import import_model
from testsupport.model_folder import write_preset
from benchmarks.common import dice_per_label
from testsupport.nnunet_reference import (blob_volume, geometry, oblique_direction, run_nnunet,
                              write_image)

# Wider than the `tiny` preset so that random weights give several large labels to compare.
FEATURES = (8, 16, 32)
MAX_DIFFERING_VOXELS = 2   # per label: float32 sums in another order (a 2-fold ensemble differs in 1 voxel)
# The numpy engine's convolutions are OpenVINO's, not torch's: the same float32 arithmetic in another order
# and blocking, so a voxel whose two best logits are within rounding may flip (4 voxels seen in one label).
MAX_DIFFERING_VOXELS_OPENVINO = 8


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
                                use_mirroring=tta, logits_float32=True)
    reference_image = sitk.ReadImage(str(reference_file))
    reference = sitk.GetArrayFromImage(reference_image)
    labels = sorted(set(np.unique(reference).tolist()) - {0})
    # The comparison must not be trivial: random weights here give several labels.
    assert len(labels) >= 8, labels
    with_ir = import_model(model_dir, tmp_path / "with_ir", ir=True)
    for backend in ("torch", "openvino"):
        spec = ModelSpec(with_ir, device="cpu", backend=backend, precision="fp32")
        results = segment_folder(tmp_path / "in", tmp_path / backend, spec, tta=tta)
        assert [r.ok for r in results] == [True], results[0].error
        ours_image = sitk.ReadImage(str(tmp_path / backend / "case.nii.gz"))
        assert geometry(ours_image) == geometry(reference_image), backend
        assert ours_image.GetPixelID() == sitk.sitkUInt8
        ours = sitk.GetArrayFromImage(ours_image)
        assert sorted(set(np.unique(ours).tolist()) - {0}) == labels, backend   # every label present in both
        differing = {label: int(np.count_nonzero((ours == label) != (reference == label))) for label in labels}
        dice = dice_per_label(ours, reference, labels)
        limit = MAX_DIFFERING_VOXELS_OPENVINO if backend == "openvino" else MAX_DIFFERING_VOXELS
        assert max(differing.values()) <= limit, {"engine": backend, "voxels differing": differing,
                                                                  "dice": dice}
