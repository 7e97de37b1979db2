"""testsupport.model_folder: nnU-Net v2 model folders with random weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from testsupport.model_folder import (
    PAPER,
    PRESETS,
    SMALL,
    TINY,
    build_network,
    count_parameters,
    make_plans,
    model_parameter_count,
    write_model_folder,
    write_preset,
)
from flare.labels import dataset_json_labels


def test_paper_architecture_has_the_papers_parameter_count():
    plans = make_plans(**PAPER.kwargs())
    assert count_parameters(build_network(plans, 1, 14)) == 30_713_158 == PAPER.expected_parameters


def test_plans_layout_matches_nnunet_2_8(tmp_path):
    d = write_preset(tmp_path / "m", "tiny", resampling="torch")
    plans = json.loads((d / "plans.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    arch = cfg["architecture"]
    assert arch["network_class_name"] == "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    assert arch["arch_kwargs"]["features_per_stage"] == list(TINY.features)
    assert arch["arch_kwargs"]["strides"] == [list(s) for s in TINY.strides]
    assert arch["arch_kwargs"]["n_conv_per_stage_decoder"] == [2, 2]
    assert arch["_kw_requires_import"] == ["conv_op", "norm_op", "dropout_op", "nonlin"]
    assert cfg["resampling_fn_probabilities"] == "resample_torch_fornnunet"
    assert cfg["spacing"] == list(TINY.spacing) and cfg["patch_size"] == list(TINY.patch_size)
    ds = json.loads((d / "dataset.json").read_text())
    assert ds["labels"] == dataset_json_labels() and ds["channel_names"] == {"0": "MRI"}
    ckpt = torch.load(d / "fold_all" / "checkpoint_final.pth", weights_only=False)
    assert ckpt["trainer_name"] == "nnUNetTrainer"
    assert ckpt["init_args"]["configuration"] == "3d_fullres"
    assert ckpt["inference_allowed_mirroring_axes"] == (0, 1, 2)
    net = build_network(plans, 1, 14, seed=123)
    net.load_state_dict(ckpt["network_weights"])  # strict: the weights fit the plans' network


def test_default_resampling_names_skimage_functions(tmp_path):
    d = write_preset(tmp_path / "m", "tiny", resampling="default")
    cfg = json.loads((d / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert cfg["resampling_fn_data"] == "resample_data_or_seg_to_shape"
    assert cfg["resampling_fn_data_kwargs"]["order"] == 3
    assert cfg["resampling_fn_probabilities_kwargs"]["order"] == 1


def test_folds_get_distinct_weights(tmp_path):
    d = write_preset(tmp_path / "m", "tiny", folds=(0, 1))
    w0 = torch.load(d / "fold_0" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    w1 = torch.load(d / "fold_1" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    key = next(iter(w0))
    assert not torch.equal(w0[key], w1[key])


@pytest.mark.parametrize("bad, msg", [
    (dict(patch_size=(16, 30, 32)), "not divisible"),
    (dict(strides=((1, 1, 1), (1, 2, 2))), "same length"),
    (dict(resampling="cubic"), "resampling must be one of"),
])
def test_bad_arguments_raise(tmp_path, bad, msg):
    with pytest.raises(ValueError, match=msg):
        write_model_folder(tmp_path / "m", **{**TINY.kwargs(), **bad})


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        write_preset("/nonexistent", "huge")


def test_presets_are_consistent():
    for arch in PRESETS.values():
        make_plans(**arch.kwargs())  # raises if the patch does not fit the strides
    assert SMALL.spacing == PAPER.spacing and SMALL.strides == PAPER.strides


@pytest.mark.parametrize("resampling", ["torch", "default"])
def test_nnunet_predictor_loads_and_predicts(tmp_path, resampling):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    d = write_preset(tmp_path / "m", "tiny", resampling=resampling)
    rng = np.random.default_rng(0)
    img = sitk.GetImageFromArray((rng.random((12, 40, 36)) * 100).astype(np.float32))
    img.SetSpacing((1.2, 1.3, 2.5))
    pred = nnUNetPredictor(tile_step_size=0.5, use_mirroring=False, device=torch.device("cpu"),
                           allow_tqdm=False)
    pred.initialize_from_trained_model_folder(str(d), use_folds=("all",))
    # nnU-Net's own loader builds the network our count describes, with the checkpoint's weights
    assert count_parameters(pred.network) == model_parameter_count(d)
    ckpt = torch.load(d / "fold_all" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    assert all(torch.equal(pred.list_of_parameters[0][k], v) for k, v in ckpt.items())
    arr = sitk.GetArrayFromImage(img)[None].astype(np.float32)
    props = {"spacing": [2.5, 1.3, 1.2]}
    seg = pred.predict_single_npy_array(arr, props, None, None, False)
    assert seg.shape == (12, 40, 36)
    assert seg.max() < 14 and len(np.unique(seg)) > 1
