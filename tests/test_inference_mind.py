"""A model whose dataset.json declares MIND input gets its descriptors computed by the predictor,
with the same result as a model fed descriptors precomputed on disk (labeltransfer's convention)."""
from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from testsupport.model_folder import write_preset
from inference.api import ModelSpec, segment_folder
from inference.mind import mind_channel_names, mind_dataset_json_entry, mind_ssc
from testsupport.nnunet_reference import blob_volume, write_image


def test_descriptors_on_the_fly_equal_precomputed(tmp_path):
    spacing = (1.5, 1.5, 3.0)
    image = blob_volume((12, 40, 40), seed=4)
    write_image(tmp_path / "raw" / "case_0000.nii.gz", image, spacing)
    descriptors = mind_ssc(image, radius=1, dilation=2, patch="box").numpy()
    for c in range(12):
        write_image(tmp_path / "desc" / f"case_{c:04d}.nii.gz", descriptors[c], spacing)

    plain = write_preset(tmp_path / "plain", "tiny", num_input_channels=12)
    mind = write_preset(tmp_path / "mind", "tiny", num_input_channels=12)  # same seed: same weights
    dataset = json.loads((mind / "dataset.json").read_text())
    dataset["channel_names"] = mind_channel_names()
    dataset["mind"] = mind_dataset_json_entry(radius=1, dilation=2, patch="box")
    (mind / "dataset.json").write_text(json.dumps(dataset))

    on_the_fly = segment_folder(tmp_path / "raw", tmp_path / "out_mind", ModelSpec(mind, device="cpu"))
    precomputed = segment_folder(tmp_path / "desc", tmp_path / "out_plain", ModelSpec(plain, device="cpu"))
    assert on_the_fly[0].ok and precomputed[0].ok, (on_the_fly[0].error, precomputed[0].error)
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out_mind" / "case.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out_plain" / "case.nii.gz")))
    assert (a == b).mean() > 0.999
    assert len(np.unique(b)) >= 2
