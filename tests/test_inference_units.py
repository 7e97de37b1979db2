"""Stage functions of the predictor against nnunetv2's own implementations of the same steps."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from testsupport.model_folder import write_preset
from inference import InferenceError
from inference.model.folder import parse_labels, resolve_configuration
from inference.loading import load_model
from inference.rules.preprocessing import nonzero_bbox
from inference.engines.torch_engine.resample import resample, resample_argmax
from inference.engines.torch_engine.sliding_window import gaussian_importance, pad_to_tile
from inference.rules.spacing import separate_axis
from inference.rules.tiling import mirror_combinations, tile_starts


@pytest.mark.parametrize("tile", [(16, 32, 32), (40, 192, 224), (7, 9, 11)])
def test_gaussian_matches_nnunet(tile):
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian
    compute_gaussian.cache_clear()
    reference = compute_gaussian(tile, sigma_scale=1 / 8, value_scaling_factor=10, dtype=torch.float16,
                                 device=torch.device("cpu"))
    ours = gaussian_importance(tile, torch.device("cpu"), torch.float16)
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("size,tile,step", [((100, 300, 260), (40, 192, 224), 0.5), ((40, 192, 224), (40, 192, 224), 0.5),
                                            ((57, 61, 300), (16, 32, 32), 0.5), ((57, 61, 300), (16, 32, 32), 0.33),
                                            ((33, 33, 33), (16, 16, 16), 1.0)])
def test_tile_starts_match_nnunet(size, tile, step):
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
    assert tile_starts(size, tile, step) == compute_steps_for_sliding_window(size, tile, step)


def test_tile_starts_rejects_bad_step():
    with pytest.raises(ValueError, match="step size"):
        tile_starts((10, 10, 10), (5, 5, 5), 0)


def test_pad_to_tile_matches_acvl_padding():
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    data = torch.rand(2, 5, 40, 9)
    reference, slicer = pad_nd_image(data, (16, 32, 32), "constant", {"value": 0}, True, None)
    ours, keep = pad_to_tile(data, (16, 32, 32))
    assert torch.equal(ours, reference)
    assert torch.equal(ours[(slice(None), *keep)], data)


def test_mirror_combinations_cover_all_subsets():
    assert mirror_combinations((0, 1, 2)) == [(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    assert mirror_combinations(None) == []


@pytest.mark.parametrize("spacing,target,force", [
    ((1.0, 1.0, 1.0), (1.5, 1.5, 1.5), None),          # isotropic: trilinear
    ((4.0, 0.8, 0.8), (2.5, 0.78, 0.78), None),        # anisotropic source: separate z
    ((1.0, 1.0, 1.0), (3.5, 1.0, 1.0), None),          # anisotropic target: separate z
    ((0.8, 4.0, 0.8), (0.7, 2.0, 0.7), None),          # low-res axis in the middle
    ((4.0, 0.8, 0.8), (2.5, 0.78, 0.78), False),       # forced off (torch planners write this)
])
def test_resample_matches_nnunet_torch_resampling(spacing, target, force):
    from nnunetv2.preprocessing.resampling.resample_torch import resample_torch_fornnunet
    from inference.rules.spacing import new_shape_for_spacing
    data = torch.rand(3, 13, 37, 29)
    new_shape = new_shape_for_spacing(data.shape[1:], spacing, target)
    reference = resample_torch_fornnunet(data, new_shape, spacing, target, is_seg=False, force_separate_z=force)
    ours = resample(data, new_shape, separate_axis(spacing, target, force))
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [None, 0])
def test_chunked_argmax_equals_full_argmax(axis):
    torch.manual_seed(0)
    logits = torch.randn(14, 9, 20, 18)
    full = resample_argmax(logits, (17, 31, 25), axis, None)
    for chunk in (1, 3, 5):
        assert torch.equal(resample_argmax(logits, (17, 31, 25), axis, chunk), full)
    assert full.dtype == torch.uint8


def test_nonzero_bbox_matches_nnunet_crop():
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    data = np.zeros((2, 20, 30, 25), np.float32)
    data[0, 3:9, 5:21, 2:4] = 1
    data[1, 12, 7, 20] = -3
    _, _, bbox = crop_to_nonzero(data.copy())
    assert nonzero_bbox((data != 0).any(0)) == tuple(tuple(b) for b in bbox)
    assert nonzero_bbox(np.zeros((4, 5, 6), bool)) == ((0, 4), (0, 5), (0, 6))


def test_configuration_inheritance_is_resolved(tmp_path):
    plans = {"configurations": {"base": {"patch_size": [1, 2, 3], "spacing": [1, 1, 1]},
                                "child": {"inherits_from": "base", "spacing": [2, 2, 2]}}}
    merged = resolve_configuration(plans, "child", tmp_path / "plans.json")
    assert merged["patch_size"] == [1, 2, 3] and merged["spacing"] == [2, 2, 2]
    with pytest.raises(InferenceError, match="configuration 'nope' not found"):
        resolve_configuration(plans, "nope", tmp_path / "plans.json")


def test_region_based_and_gapped_labels_are_refused(tmp_path):
    with pytest.raises(InferenceError, match="region-based"):
        parse_labels({"labels": {"background": 0, "whole": [1, 2], "core": 2}}, tmp_path)
    with pytest.raises(InferenceError, match="consecutive"):
        parse_labels({"labels": {"background": 0, "a": 1, "b": 3}}, tmp_path)
    assert parse_labels({"labels": {"background": 0, "a": 1, "ignore": 2}}, tmp_path) == {"background": 0, "a": 1}


def test_checkpoint_of_compiled_network_loads(tmp_path):
    model_dir = write_preset(tmp_path / "m", "tiny")
    path = model_dir / "fold_all" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    plain = load_model(model_dir).networks[0].state_dict()
    checkpoint["network_weights"] = {f"_orig_mod.{k}": v for k, v in checkpoint["network_weights"].items()}
    torch.save(checkpoint, path)
    loaded = load_model(model_dir).networks[0].state_dict()
    assert all(torch.equal(plain[k], loaded[k]) for k in plain)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    model_dir = write_preset(tmp_path / "m", "tiny")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    checkpoint = torch.load(model_dir / "fold_all" / "checkpoint_final.pth", weights_only=False)
    checkpoint["payload"] = Evil()
    torch.save(checkpoint, model_dir / "fold_all" / "checkpoint_final.pth")
    with pytest.raises(InferenceError, match="weights-only"):
        load_model(model_dir)
    assert not marker.exists()


def test_wrong_label_count_is_a_clear_error(tmp_path):
    model_dir = write_preset(tmp_path / "m", "tiny")
    dataset = json.loads((model_dir / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "liver": 1}
    (model_dir / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(InferenceError, match="weights do not fit.*2 labels"):
        load_model(model_dir)


@pytest.mark.parametrize("size", [1, 7, (1 << 18) - 1, 1 << 18, (1 << 18) * 3 + 5])
def test_mean_and_std_equal_numpys_float64_statistics(size):
    """The chunked z-score statistics give numpy's float64 mean and std to float32 (what normalisation
    uses), across chunk boundaries."""
    from inference.engines.numpy_engine.preprocess import mean_and_std
    values = np.random.default_rng(size).normal(300.0, 80.0, size).astype(np.float32)
    mean, std = mean_and_std(values)
    assert np.float32(mean) == np.float32(values.mean(dtype=np.float64))
    assert np.float32(std) == np.float32(values.std(dtype=np.float64))
    assert mean_and_std(np.zeros(0, np.float32)) == (0.0, 0.0)
