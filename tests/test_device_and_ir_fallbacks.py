"""Refusals and fallbacks at start-up that had no test: `--device cuda` on a machine without CUDA (a
clear error, exit code 2, no traceback; predictor and pseudolabel), and an OpenVINO IR written without
its checkpoint facts (configuration, mirror axes): the model loads through the checkpoint, or, without
one, a clear message."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from inference import InferenceError
from testsupport.model_folder import write_preset
from testsupport.nnunet_reference import blob_volume, write_image
from testsupport.predictor_cli import run


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_preset(tmp_path_factory.mktemp("model") / "m", "tiny")


@pytest.fixture
def inputs(tmp_path) -> Path:
    write_image(tmp_path / "in" / "a_0000.nii.gz", blob_volume((12, 40, 40)), (1.5, 1.5, 3.0))
    return tmp_path / "in"


def _no_cuda() -> bool:
    import torch
    return not torch.cuda.is_available()


needs_no_cuda = pytest.mark.skipif(not _no_cuda(), reason="this machine has CUDA")


@needs_no_cuda
def test_predictor_device_cuda_without_a_gpu(tmp_path, model_dir, inputs, capsys):
    code, out, err = run(["-i", inputs, "-o", tmp_path / "out", "-m", model_dir, "--device", "cuda"], capsys)
    assert code == 2
    assert err == "error: --device cuda asked for, but no CUDA device is available\n"
    assert "Traceback" not in out + err
    assert not (tmp_path / "out" / "a.nii.gz").exists()


@needs_no_cuda
def test_pseudolabel_device_cuda_without_a_gpu(tmp_path, model_dir, inputs, capsys):
    from labeltransfer.__main__ import main
    code = main(["pseudolabel", str(inputs), str(tmp_path / "out"), "-m", str(model_dir), "--device", "cuda"])
    captured = capsys.readouterr()
    assert code == 2
    assert "pseudolabel: error: --device cuda asked for, but no CUDA device is available" in captured.err
    assert "Traceback" not in captured.out + captured.err


@pytest.fixture
def ir_without_facts(tmp_path, model_dir) -> Path:
    """The model folder with an IR converted without metadata (as an older `weights ir` wrote it)."""
    pytest.importorskip("openvino")
    from inference.loading import load_model
    from inference.networks.openvino_network import convert_to_ir, read_ir
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    model = load_model(model_dir, None, device="cpu", backend="torch")
    convert_to_ir(model.networks[0], model.num_channels, model.config.patch_size,
                  folder / "fold_all" / "network.xml")
    assert read_ir(folder / "fold_all" / "network.xml")[1] == {}     # no checkpoint facts in it
    return folder


def test_ir_without_checkpoint_facts_loads_through_the_checkpoint(ir_without_facts, model_dir, inputs, tmp_path):
    from inference.api import segment_folder
    from inference.loading import load_model
    torch_model = load_model(model_dir, None, device="cpu", backend="torch")
    model = load_model(ir_without_facts, None, device="cpu", backend="openvino")
    assert model.plan.backend == "openvino"
    assert (model.config.name, model.mirror_axes) == (torch_model.config.name, torch_model.mirror_axes)
    results = segment_folder(inputs, tmp_path / "out", model=model)
    assert [r.ok for r in results] == [True]


def test_ir_without_facts_nor_checkpoint_is_a_clear_error(ir_without_facts):
    from inference.loading import load_model
    os.remove(ir_without_facts / "fold_all" / "checkpoint_final.pth")
    with pytest.raises(InferenceError, match=f"{ir_without_facts}: no fold_<f>/checkpoint_final.pth found"):
        load_model(ir_without_facts, None, device="cpu", backend="openvino")
    with pytest.raises(InferenceError, match="checkpoint_final.pth: checkpoint not found"):
        load_model(ir_without_facts, ["all"], device="cpu", backend="openvino")
