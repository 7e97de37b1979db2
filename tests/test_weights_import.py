"""`python -m inference.weights import`: validation, stripping, fp16 storage, manifest checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from testsupport.model_folder import write_preset
from inference import InferenceError
from inference.api import segment_array
from inference.loading import load_model
from inference.weights import import_model, main
from testsupport.nnunet_reference import blob_volume


@pytest.fixture
def trained(tmp_path):
    """A model folder with training state in its checkpoint, as nnUNetv2_train leaves it."""
    model_dir = write_preset(tmp_path / "trained", "tiny", folds=(0, 1))
    for fold in (0, 1):
        path = model_dir / f"fold_{fold}" / "checkpoint_final.pth"
        checkpoint = torch.load(path, weights_only=False)
        checkpoint["optimizer_state"] = {"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": []}
        checkpoint["logging"] = {"train_losses": [np.float64(0.5), np.float64(0.4)], "ema_fg_dice": [0.1]}
        checkpoint["_best_ema"] = np.float64(0.42)
        torch.save(checkpoint, path)
    return model_dir


def test_import_strips_validates_and_predicts_the_same(trained, tmp_path):
    dest = import_model(trained, tmp_path / "weights", ir=False)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "dataset.json", "fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth", "manifest.json", "plans.json"]
    checkpoint = torch.load(dest / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert set(checkpoint) == {"network_weights", "init_args", "trainer_name", "inference_allowed_mirroring_axes"}
    assert checkpoint["init_args"] == {"configuration": "3d_fullres"}
    manifest = json.loads((dest / "manifest.json").read_text())
    assert set(manifest["files"]) == {"dataset.json", "plans.json", "fold_0/checkpoint_final.pth",
                                      "fold_1/checkpoint_final.pth"}
    image = blob_volume((12, 40, 40))[None]
    ours = segment_array(image, (3.0, 1.5, 1.5), load_model(dest))
    source = segment_array(image, (3.0, 1.5, 1.5), load_model(trained))
    assert np.array_equal(ours, source)


@pytest.mark.parametrize("half", [False, True])
def test_import_keeps_shared_parameters_shared(trained, tmp_path, half):
    """dynamic_network_architectures registers each conv twice (conv.weight, all_modules.0.weight): the
    imported file stores such a parameter once, not twice, and is no larger than the source weights."""
    dest = import_model(trained, tmp_path / "w", half=half, ir=False)
    weights = torch.load(dest / "fold_0" / "checkpoint_final.pth", weights_only=True)["network_weights"]
    pairs = [(k, k.replace(".conv.weight", ".all_modules.0.weight")) for k in weights if k.endswith(".conv.weight")]
    assert pairs and all(k2 in weights for _, k2 in pairs)
    assert all(weights[a].data_ptr() == weights[b].data_ptr() for a, b in pairs)
    unique_bytes = sum({v.data_ptr(): v.numel() * v.element_size() for v in weights.values()}.values())
    stored = (dest / "fold_0" / "checkpoint_final.pth").stat().st_size
    assert stored < unique_bytes + 200_000            # tensors once plus pickle overhead
    source = torch.load(trained / "fold_0" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    assert sum(v.numel() for v in weights.values()) == sum(v.numel() for v in source.values())


def test_half_precision_storage(trained, tmp_path):
    full = import_model(trained, tmp_path / "full", ir=False)
    half = import_model(trained, tmp_path / "half", half=True, ir=False)
    weights = torch.load(half / "fold_0" / "checkpoint_final.pth", weights_only=True)["network_weights"]
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    size = lambda d: sum(p.stat().st_size for p in d.rglob("*.pth"))  # noqa: E731
    full_weights = torch.load(full / "fold_0" / "checkpoint_final.pth", weights_only=True)["network_weights"]
    tensor_bytes = 2 * sum({v.data_ptr(): v.numel() * 4 for v in full_weights.values()
                            if v.is_floating_point()}.values())            # both folds, fp32
    assert size(full) - size(half) > 0.45 * tensor_bytes                    # fp16 halves the tensors
    image = blob_volume((12, 40, 40))[None]
    a = segment_array(image, (3.0, 1.5, 1.5), load_model(full))
    b = segment_array(image, (3.0, 1.5, 1.5), load_model(half))
    assert (a == b).mean() > 0.99


def test_tampered_file_is_refused(trained, tmp_path):
    dest = import_model(trained, tmp_path / "weights", ir=False)
    path = dest / "fold_1" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=True)
    first = next(iter(checkpoint["network_weights"]))
    checkpoint["network_weights"][first] += 1
    torch.save(checkpoint, path)
    with pytest.raises(InferenceError, match=r"fold_1/checkpoint_final.pth: sha256 differs"):
        load_model(dest)
    (dest / "plans.json").write_text((dest / "plans.json").read_text() + " ")
    with pytest.raises(InferenceError, match=r"plans.json: sha256 differs"):
        load_model(dest, folds=["0"])


def test_missing_file_and_wrong_label_count(trained, tmp_path):
    (trained / "plans.json").rename(tmp_path / "plans.json")
    with pytest.raises(InferenceError, match=r"plans.json: missing"):
        import_model(trained, tmp_path / "w1", ir=False)
    (tmp_path / "plans.json").rename(trained / "plans.json")
    dataset = json.loads((trained / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "liver": 1, "spleen": 2}
    (trained / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(InferenceError, match=r"weights do not fit .*3 labels"):
        import_model(trained, tmp_path / "w2", ir=False)
    assert not (tmp_path / "w1").exists() and not (tmp_path / "w2").exists()


def test_pickle_that_would_run_code_is_refused(trained, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = trained / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["logging"] = Evil()
    torch.save(checkpoint, path)
    with pytest.raises(InferenceError, match="weights-only"):
        import_model(trained, tmp_path / "weights", ir=False)
    assert not marker.exists()
    assert not (tmp_path / "weights").exists()


def test_destination_is_replaced_only_with_overwrite(trained, tmp_path, capsys):
    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / "README.md").write_text("old model")
    assert main(["import", str(trained), "-o", str(dest)]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert main(["import", str(trained), "--output", str(dest), "--overwrite", "--folds", "1", "--no-ir"]) == 0
    assert "imported" in capsys.readouterr().out
    assert not (dest / "README.md").exists()
    assert load_model(dest).folds == ["1"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".weights")]


def test_training_checkpoint_loads_without_scoped_safe_globals(trained, monkeypatch):
    """torch 2.4 (the GPU image) has add_safe_globals but not the safe_globals context manager."""
    monkeypatch.delattr(torch.serialization, "safe_globals")
    assert load_model(trained).folds == ["0", "1"]
