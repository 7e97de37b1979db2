"""MIND-SSC in numpy (inference.engines.numpy_engine.mind) against the torch implementation
(inference.mind, itself checked against a float64 reference in tests/test_mind.py), and a MIND model on
the torch-free CPU path."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import mind as torch_mind
from inference.engines.choice import openvino_installed
from inference.engines.numpy_engine import mind as numpy_mind
from testsupport.model_folder import write_preset
from testsupport.nnunet_reference import blob_volume, write_image

REPO = Path(__file__).resolve().parent.parent
# values lie in (0, 1]: float32 rounding of two summation orders stays within a few units in the
# 6th decimal (observed up to 2.6e-6 on a 100x256x256 volume)
FLOAT32_ROUNDING = 1e-5


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (blob_volume(shape, seed=seed) * 200 + rng.normal(size=shape) * 10).astype(np.float32)


@pytest.mark.parametrize("shape,params", [
    ((12, 30, 26), {"radius": 1, "dilation": 2, "patch": "box"}),
    ((10, 25, 31), {"radius": 2, "dilation": 1, "patch": "gaussian", "sigma": 1.0}),
    ((7, 12, 10), {"radius": 0, "dilation": 3, "patch": "box"}),
    ((3, 40, 5), {"radius": 1, "dilation": 1, "patch": "gaussian", "sigma": 0.6}),   # thinner than the halo
])
def test_equals_torch_within_float32_rounding(shape, params):
    image = _image(shape)
    reference = torch_mind.mind_ssc(image, **params).numpy()
    ours = numpy_mind.mind_ssc(image, **params)
    assert ours.dtype == np.float32 and ours.shape == (12, *shape)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=FLOAT32_ROUNDING)
    np.testing.assert_array_equal(ours.max(axis=0), 1)   # exp(-0) where the channel minimum sits


@pytest.mark.parametrize("slab,workers", [(1, 1), (3, 2), (5, 4), (100, 1)])
def test_slabs_and_threads_give_the_same_result(slab, workers):
    image = _image((11, 20, 18), seed=2)
    whole = numpy_mind.mind_ssc(image, slab=None, workers=1)
    np.testing.assert_array_equal(numpy_mind.mind_ssc(image, slab=slab, workers=workers), whole)


def test_integer_image_and_predictor_entry_point():
    image = (_image((8, 16, 14)) * 10).astype(np.int16)
    params = torch_mind.mind_dataset_json_entry(radius=1, dilation=2, patch="box")
    ours = numpy_mind.mind_channels(image[None], params)
    reference = torch_mind.mind_channels(torch.from_numpy(image[None]), params).numpy()
    np.testing.assert_allclose(ours, reference, rtol=0, atol=FLOAT32_ROUNDING)
    with pytest.raises(ValueError, match="one input channel"):
        numpy_mind.mind_channels(np.zeros((2, 4, 4, 4), np.float32), params)


def test_constant_image_gives_ones():
    np.testing.assert_array_equal(numpy_mind.mind_ssc(np.full((4, 5, 6), 7.0)), np.ones((12, 4, 5, 6), np.float32))


@pytest.mark.parametrize("image,kwargs,error,message", [
    (np.zeros((4, 4)), {}, ValueError, "3-D"),
    (np.zeros((0, 4, 4)), {}, ValueError, "empty"),
    (np.zeros((4, 4, 4), bool), {}, TypeError, "not a real intensity type"),
    (np.zeros((4, 4, 4)), {"radius": -1}, ValueError, "radius"),
    (np.zeros((4, 4, 4)), {"dilation": 0}, ValueError, "dilation"),
    (np.zeros((4, 4, 4)), {"patch": "disc"}, ValueError, "patch must be one of"),
    (np.zeros((4, 4, 4)), {"patch": "gaussian", "sigma": 0.0}, ValueError, "sigma > 0"),
])
def test_bad_inputs_raise(image, kwargs, error, message):
    if "sigma" in kwargs:
        image = _image((4, 4, 4))   # a constant image would return before the weights are made
    with pytest.raises(error, match=message):
        numpy_mind.mind_ssc(image, **kwargs)


def test_non_finite_image_raises():
    image = _image((4, 5, 6))
    image[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        numpy_mind.mind_ssc(image)


_NO_TORCH_MIND = """
import json, sys
sys.modules["torch"] = None   # any `import torch` on this path raises ImportError
from inference.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc}))
"""


@pytest.mark.skipif(not openvino_installed(), reason="openvino not installed")
def test_mind_model_runs_on_the_torch_free_path(tmp_path):
    """A MIND model with IR, as in the CPU image (no torch): its labels equal the torch path's, which
    computes the descriptors with inference.mind."""
    from inference.mind import mind_channel_names, mind_dataset_json_entry
    from inference.weights import import_model
    source = write_preset(tmp_path / "source", "tiny", num_input_channels=12)
    dataset = json.loads((source / "dataset.json").read_text())
    dataset["channel_names"] = mind_channel_names()
    dataset["mind"] = mind_dataset_json_entry(radius=1, dilation=2, patch="box")
    (source / "dataset.json").write_text(json.dumps(dataset))
    model = import_model(source, tmp_path / "model", ir=True)
    write_image(tmp_path / "in" / "case_0000.nii.gz", blob_volume((12, 40, 40), seed=4), (1.5, 1.5, 3.0))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    args = ["-i", str(tmp_path / "in"), "-m", str(model), "--device", "cpu", "--precision", "fp32", "-q"]
    run = subprocess.run([sys.executable, "-c", _NO_TORCH_MIND, *args, "-o", str(tmp_path / "numpy")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"rc": 0}
    from inference.cli import main
    assert main([*args, "-o", str(tmp_path / "torch"), "--backend", "torch"]) == 0
    import SimpleITK as sitk
    ours, reference = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / "case.nii.gz")))
                       for d in ("numpy", "torch"))
    assert len(np.unique(reference)) >= 2
    assert (ours != reference).mean() < 1e-3   # random weights: float32 near-ties may flip a voxel or two


@pytest.mark.parametrize("bad,message", [({"radius": -1}, "radius"), ({"radius": 1.5}, "radius"),
                                         ({"dilation": 0}, "dilation"), ({"patch": "disc"}, "patch")])
def test_both_engines_and_dataset_json_refuse_the_same_parameters(bad, message):
    """One rule (inference.mind_definition.check_parameters) for the torch and numpy MIND-SSC and the
    dataset.json entry that declares MIND input."""
    from inference.engines.numpy_engine.mind import mind_ssc as numpy_mind_ssc
    from inference.mind_definition import mind_dataset_json_entry
    image = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    params = {"radius": 1, "dilation": 2, "patch": "box", **bad}
    for compute in (lambda: numpy_mind_ssc(image, **params), lambda: torch_mind.mind_ssc(torch.from_numpy(image), **params),
                    lambda: mind_dataset_json_entry(**params)):
        with pytest.raises(ValueError, match=message):
            compute()
