"""benchmarks.studies.openvino_levers: every studied config compiles, async and sync runners give the same logits
in tile order, the agreement measure is exact, and network_limit --openvino-levers refuses a missing sample."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.studies import network_limit
from benchmarks.studies import openvino_levers as study

ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory):
    """A two-layer 3D conv net saved as IR with an open batch axis, as inference.weights writes it."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.LeakyReLU(),
                              torch.nn.Conv3d(4, 3, 1)).eval()
    example = torch.zeros(1, 1, 4, 6, 8)
    xml = tmp_path_factory.mktemp("ir") / "network.xml"
    ov.save_model(ov.convert_model(net, example_input=example, input=[ov.PartialShape([-1, 1, 4, 6, 8])]),
                  str(xml), compress_to_fp16=False)
    return net, xml


def test_agreement_exact_values():
    reference = np.zeros((1, 3, 2, 1, 1))
    reference[0, 1] = 1.0                                  # argmax class 1 at both voxels
    logits = reference.copy()
    logits[0, 2, 0] = 2.0                                   # voxel 0 now argmax 2, diff 2
    logits[0, 0, 1] = -0.5                                  # voxel 1 unchanged argmax, diff 0.5
    assert study.agreement(logits, reference) == (0.5, 2.0)


def test_every_variant_compiles_and_runs_in_tile_order(tiny_ir):
    net, xml = tiny_ir
    tiles = np.random.default_rng(0).standard_normal((5, 1, 4, 6, 8)).astype(np.float32)
    with torch.inference_mode():
        expected = net(torch.from_numpy(tiles)).numpy()
    core = ov.Core()
    for variant in study.variants(2):                     # a misspelt property or value fails here
        compiled = study.compile_ir(core, xml, variant.config)
        run = study.runner(compiled, variant.requests, tiles)
        out = run().copy()
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5, err_msg=variant.name)
        run([1, 3])                                        # a slot: only those tiles, same results
        np.testing.assert_array_equal(run([1, 3])[[1, 3]], out[[1, 3]])


def test_openvino_levers_refuses_a_missing_sample(tmp_path, capsys):
    code = network_limit.main(["--openvino-levers", "-i", str(tmp_path / "none.nii.gz"), "-o", str(tmp_path)])
    assert code == 2
    assert "none.nii.gz: input image not found" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
