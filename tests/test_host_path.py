"""The torch-free OpenVINO path (the numpy engine, inference.engines.numpy_engine): each numpy step against the torch step it mirrors, the
whole case against `--backend torch`, and a run that never imports torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import InferenceError
from inference.engines.numpy_engine import preprocess as np_preprocess
from inference.engines.numpy_engine import resample as np_resample
from inference.engines.numpy_engine import sliding_window as np_window
from inference.rules.preprocessing import ChannelNormalization, normalization_steps
from inference.engines.torch_engine import preprocess as torch_preprocess
from inference.engines.choice import openvino_installed
from inference.loading import load_model
from inference.engines.torch_engine.resample import resample as torch_resample
from inference.engines.torch_engine.resample import resample_argmax as torch_resample_argmax
from inference.engines.torch_engine.sliding_window import predict_logits as torch_predict_logits
from testsupport.model_folder import write_preset
from testsupport.nnunet_reference import blob_volume

REPO = Path(__file__).resolve().parent.parent
needs_openvino = pytest.mark.skipif(not openvino_installed(), reason="openvino not installed")


@pytest.mark.parametrize("shape,new_shape,axis", [
    ((3, 7, 9, 11), (13, 5, 20), None),        # up and down at once, trilinear
    ((2, 40, 33, 17), (40, 33, 17), None),     # same grid: returned as is
    ((2, 6, 31, 29), (11, 64, 50), 0),         # anisotropic: nearest-exact along axis 0
    ((1, 30, 8, 25), (30, 21, 9), 1),
    ((4, 12, 10, 5), (7, 13, 19), 2),
    ((1, 1, 10, 10), (3, 10, 10), None),       # a single plane
])
def test_resample_equals_torch(shape, new_shape, axis):
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    ours = np_resample.resample(data, new_shape, axis)
    reference = torch_resample(torch.from_numpy(data), new_shape, axis).numpy()
    assert ours.shape == reference.shape == (shape[0], *new_shape) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_nearest_exact_indices_equal_torch():
    """Every input index torch's nearest-exact picks, for many size pairs (integers: exact equality)."""
    for old in (1, 2, 3, 7, 13, 33, 100, 255):
        for new in (1, 2, 5, 11, 31, 64, 99, 256, 511):
            ramp = torch.arange(old, dtype=torch.float32)[None, None]
            picked = torch.nn.functional.interpolate(ramp, (new,), mode="nearest-exact")[0, 0]
            assert np.array_equal(np_resample._nearest_exact_source(old, new), picked.long().numpy()), (old, new)


@pytest.mark.parametrize("slab", [1, 3, None])
def test_resample_argmax_equals_torch(slab):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(14, 9, 20, 23)).astype(np.float32)
    for new_shape, axis in (((17, 41, 30), None), ((30, 41, 40), 0)):
        reference = torch_resample_argmax(torch.from_numpy(logits), new_shape, axis).numpy()
        ours = np_resample.resample_argmax(logits, new_shape, axis, slab=slab, workers=2)
        assert ours.dtype == np.uint8 and ours.shape == new_shape
        # float32 rounding may flip a near-tie; random logits have very few
        assert (ours == reference).mean() > 0.9999


def test_running_argmax_keeps_the_first_maximum():
    classes = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 2.0], [3.0, 1.0, 2.0]], dtype=np.float32)[:, :, None]
    out = np.empty((3, 1), dtype=np.uint8)
    np_resample._running_argmax(classes, out)
    assert out[:, 0].tolist() == torch.from_numpy(classes).argmax(0)[:, 0].tolist() == [1, 0, 0]


@pytest.mark.parametrize("scheme,properties", [
    ("ZScoreNormalization", None),
    ("CTNormalization", {"mean": 40.0, "std": 120.0, "percentile_00_5": -200.0, "percentile_99_5": 300.0}),
    ("NoNormalization", None),
    ("RescaleTo01Normalization", None),
])
def test_normalization_equals_torch(scheme, properties):
    image = np.random.default_rng(2).normal(50, 200, size=(20, 30, 40)).astype(np.float32)
    ours = image.copy()
    step = ChannelNormalization(scheme, properties, use_mask=False)
    np_preprocess.normalize_channel(ours, step, None, "plans.json")
    reference = torch_preprocess.normalize_channel(torch.from_numpy(image.copy()), step, None, "plans.json").numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_normalization_refusals_name_the_source(tmp_path):
    """Both engines take their normalisation from rules.normalization_steps, which refuses up front."""
    from types import SimpleNamespace
    def model_with(scheme, properties):
        config = SimpleNamespace(normalization_schemes=[scheme], intensity_properties={"0": properties},
                                 use_mask_for_norm=[False])
        return SimpleNamespace(config=config, model_dir=tmp_path)
    with pytest.raises(InferenceError, match="plans.json: CTNormalization needs"):
        normalization_steps(model_with("CTNormalization", {}))
    with pytest.raises(InferenceError, match="plans.json: normalization scheme 'Foo'"):
        normalization_steps(model_with("Foo", None))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random-weight model folder imported with its OpenVINO IR."""
    if not openvino_installed():
        pytest.skip("openvino not installed")
    from inference.weights import import_model
    root = tmp_path_factory.mktemp("host")
    return import_model(write_preset(root / "source", "tiny", features=(8, 16, 32)), root / "imported", ir=True)


@needs_openvino
def test_preprocess_equals_torch(tiny_model_dir):
    model = load_model(tiny_model_dir, backend="torch")
    image = blob_volume((14, 44, 40))[None].astype(np.float32)
    image[0, 5, 0, :3] = np.nan                     # set to 0 with a warning on both paths
    image[0, :2] = 0                                # a border to crop
    with pytest.warns(UserWarning, match="3 NaN/Inf voxels"):
        ours = np_preprocess.preprocess(image, (3.0, 1.2, 1.7), model, "case.nii.gz")
    with pytest.warns(UserWarning, match="3 NaN/Inf voxels"):
        reference = torch_preprocess.preprocess(image, (3.0, 1.2, 1.7), model, "case.nii.gz")
    assert np.isnan(image).sum() == 3               # the caller's array is left alone
    assert (ours.bbox, ours.shape_before_cropping, ours.shape_after_cropping, ours.spacing) == \
        (reference.bbox, reference.shape_before_cropping, reference.shape_after_cropping, reference.spacing)
    np.testing.assert_allclose(ours.data, reference.data.numpy(), rtol=1e-4, atol=1e-4)


@needs_openvino
@pytest.mark.parametrize("tta,batch", [(False, 1), (True, 2)])
def test_sliding_window_equals_torch(tiny_model_dir, tta, batch):
    model = load_model(tiny_model_dir, backend="torch")
    data = np.random.default_rng(3).normal(size=(1, 20, 45, 30)).astype(np.float32)   # padded in x
    mirror = (0, 1, 2) if tta else None

    def numpy_network(tiles: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model.networks[0](torch.from_numpy(np.ascontiguousarray(tiles))).numpy()

    seen = []
    ours = np_window.predict_logits(data, [numpy_network], model.num_classes, model.config.patch_size, 0.5, mirror,
                               lambda done, total: seen.append((done, total)), batch_size=batch)
    reference = torch_predict_logits(torch.from_numpy(data), model.networks, model.num_classes,
                                     model.config.patch_size, 0.5, mirror).numpy()
    assert ours.shape == reference.shape == (model.num_classes, 20, 45, 30)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)
    assert seen[-1][0] == seen[-1][1] == len(seen)


@needs_openvino
def test_openvino_model_takes_the_host_path_and_agrees_with_torch(tiny_model_dir):
    from inference.api import segment_array
    ov_model = load_model(tiny_model_dir, precision="fp32")   # fp32: auto is bf16 on a CPU with native bf16
    assert ov_model.plan.backend == "openvino" and ov_model.device.type == "cpu"
    torch_model = load_model(tiny_model_dir, backend="torch", precision="fp32")
    image = blob_volume((14, 44, 40))[None]
    ours = segment_array(image, (3.0, 1.5, 1.5), ov_model)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.uint8
    # random weights leave the 14 logits close everywhere: float32 rounding may flip a near-tie or two
    assert (ours != segment_array(image, (3.0, 1.5, 1.5), torch_model)).mean() < 1e-3


@needs_openvino
def test_ir_carries_the_checkpoint_facts(tiny_model_dir):
    from inference.networks.openvino_network import read_ir
    _, facts = read_ir(tiny_model_dir / "fold_all" / "network.xml")
    checkpoint = torch.load(tiny_model_dir / "fold_all" / "checkpoint_final.pth", weights_only=False)
    assert facts == {"configuration": checkpoint["init_args"]["configuration"],
                     "mirror_axes": list(checkpoint["inference_allowed_mirroring_axes"])}


_NO_TORCH_RUN = """
import json, sys
from inference.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules}))
"""


@needs_openvino
def test_the_default_model_runs_without_importing_torch(tmp_path):
    """The shipped model on a sample, as the container runs it on a CPU (fp32 pinned: auto is bf16 where the
    CPU has it): torch is never imported, and the labels equal `--backend torch`'s up to a few float32
    near-ties."""
    sample = sorted((REPO / "samples" / "inputs").glob("*_0000.nii.gz"))[0]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / sample.name).symlink_to(sample)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-c", _NO_TORCH_RUN, "-i", str(tmp_path / "in"),
                          "-o", str(tmp_path / "out"), "--device", "cpu", "--precision", "fp32", "-q"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"rc": 0, "torch": False}
    assert "(openvino fp32, batch 1)" in run.stdout
    from inference.cli import main
    assert main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "torch"), "--device", "cpu",
                 "--backend", "torch", "--precision", "fp32", "-q"]) == 0
    import SimpleITK as sitk
    case = sample.name.replace("_0000", "")
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / case)))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "torch" / case)))
    assert (ours != reference).mean() < 1e-4
