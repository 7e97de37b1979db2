"""Network engines: backend and precision choice, OpenVINO IR written at import (agreement with torch,
manifest, tampering), folders without IR, and tile batching that leaves the logits unchanged."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from testsupport.model_folder import write_preset
from inference import InferenceError
from inference.api import segment_array
from inference.engines.choice import (IR_BIN, IR_XML, NetworkPlan, choose_backend, choose_precision, cpu_flags,
                                      cpu_has_native_bf16, default_batch_size, native_bf16_evidence,
                                      openvino_installed, precision_reason)
from inference.loading import load_model
from inference.model.manifest import add_to_manifest, start_verifying
from inference.engines.torch_engine.sliding_window import ACCUMULATION_DTYPE, predict_logits
from testsupport.nnunet_reference import blob_volume

needs_openvino = pytest.mark.skipif(not openvino_installed(), reason="openvino not installed")


@pytest.mark.parametrize("requested,device,ir,ov,expected", [
    ("auto", "cpu", True, True, "openvino"),
    ("auto", "cpu", False, True, "torch"),      # a user's nnU-Net folder: no IR
    ("auto", "cpu", True, False, "torch"),      # image or venv without openvino
    ("auto", "cuda", True, True, "torch"),      # CUDA stays torch
    ("torch", "cpu", True, True, "torch"),
    ("openvino", "cpu", True, True, "openvino"),
])
def test_backend_choice(requested, device, ir, ov, expected):
    assert choose_backend(requested, device, ir, ov) == expected


@pytest.mark.parametrize("device,ir,ov,message", [
    ("cpu", False, True, r"no OpenVINO IR .*inference.weights ir"),
    ("cpu", True, False, r"openvino package is not installed"),
    ("cuda", True, True, r"CPU only"),
])
def test_explicit_openvino_that_cannot_run_is_an_error(device, ir, ov, message):
    with pytest.raises(InferenceError, match=message):
        choose_backend("openvino", device, ir, ov)
    with pytest.raises(InferenceError, match="backend must be one of"):
        choose_backend("onnx", "cpu", True, True)


@pytest.mark.parametrize("requested,device,native,cuda_bf16,engine,expected", [
    ("auto", "cpu", True, False, "openvino", "bf16"),    # native bf16: OpenVINO runs it (path_agreement's gate)
    ("auto", "cpu", False, False, "openvino", "fp32"),   # emulated bf16 would be slower than fp32
    ("auto", "cpu", True, False, "torch", "fp32"),       # torch on the CPU stays the exact reference
    ("auto", "cuda", False, True, "torch", "fp16"),      # nnU-Net's CUDA default
    ("fp32", "cpu", True, False, "openvino", "fp32"),    # fp32 stays exact wherever asked for
    ("fp32", "cuda", False, False, "torch", "fp32"),
    ("bf16", "cpu", True, False, "torch", "bf16"),
    ("bf16", "cuda", False, True, "torch", "bf16"),
])
def test_precision_choice(requested, device, native, cuda_bf16, engine, expected):
    assert choose_precision(requested, device, native, cuda_bf16, engine) == expected


@pytest.mark.parametrize("requested,precision,device,evidence,engine,expected", [
    ("auto", "bf16", "cpu", "amx_bf16 in /proc/cpuinfo", "openvino",
     "auto: native bfloat16 on this CPU (amx_bf16 in /proc/cpuinfo); --precision fp32 for exact float32"),
    ("auto", "fp32", "cpu", None, "openvino", "auto: this CPU has no native bfloat16 (avx512_bf16 or amx_bf16)"),
    ("auto", "fp32", "cpu", "amx_bf16 in /proc/cpuinfo", "torch",
     "auto: torch on the CPU runs float32 (bf16 is auto for OpenVINO only)"),
    ("auto", "fp16", "cuda", None, "torch", "auto: fp16 autocast on CUDA, as nnU-Net"),
    ("fp32", "fp32", "cpu", "amx_bf16 in /proc/cpuinfo", "openvino", "--precision fp32"),
])
def test_precision_reason(requested, precision, device, evidence, engine, expected):
    assert precision_reason(requested, precision, device, evidence, engine) == expected


@pytest.mark.parametrize("requested,device,native,cuda_bf16,message", [
    ("bf16", "cpu", False, False, "native bfloat16"),
    ("fp16", "cpu", True, False, "fp16 is for CUDA"),
    ("bf16", "cuda", False, False, "no bfloat16 support"),
    ("int8", "cpu", True, False, "precision must be one of"),
])
def test_precision_refusals(requested, device, native, cuda_bf16, message):
    with pytest.raises(InferenceError, match=message):
        choose_precision(requested, device, native, cuda_bf16)


def test_bf16_detected_from_cpu_flags_not_names(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC with bf16 in its name\n"
                       "flags\t\t: fpu sse avx2 avx512f avx512bw\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "avx2", "avx512f", "avx512bw"}
    assert cpu_flags(tmp_path / "absent") == set()
    import inference.engines.choice as backend
    for flags, expected in (({"avx512f", "avx2"}, None), ({"avx512f", "avx512_bf16"}, "avx512_bf16 in /proc/cpuinfo"),
                            ({"amx_bf16", "avx512_bf16"}, "amx_bf16, avx512_bf16 in /proc/cpuinfo")):
        monkeypatch.setattr(backend, "cpu_flags", lambda flags=flags: flags)
        monkeypatch.setattr(backend, "openvino_installed", lambda: pytest.fail("flags decide: no library asked"))
        backend.native_bf16_evidence.cache_clear()
        assert native_bf16_evidence() == expected and cpu_has_native_bf16() is (expected is not None)
    backend.native_bf16_evidence.cache_clear()


def test_bf16_without_cpu_flags_or_libraries_is_no(monkeypatch):
    """No /proc/cpuinfo flags, no openvino, no torch (a torch-free image elsewhere): fp32, no ImportError."""
    import inference.engines.choice as backend
    monkeypatch.setattr(backend, "cpu_flags", lambda: set())
    monkeypatch.setattr(backend, "openvino_installed", lambda: False)
    monkeypatch.setattr(backend, "torch_installed", lambda: False)
    backend.native_bf16_evidence.cache_clear()
    try:
        assert native_bf16_evidence() is None
        assert choose_precision("auto", "cpu", cpu_has_native_bf16(), engine="openvino") == "fp32"
    finally:
        backend.native_bf16_evidence.cache_clear()


@pytest.mark.parametrize("backend,device,tile,expected", [
    ("torch", "cpu", (16, 64, 64), 4),       # small tiles: batching pays on torch CPU
    ("torch", "cpu", (16, 32, 32), 4),       # capped at 4
    ("torch", "cpu", (32, 64, 96), 2),       # 196,608 voxels: four would pass 2^19
    ("torch", "cpu", (32, 80, 96), 2),       # the default model's tile
    ("torch", "cpu", (40, 192, 224), 1),     # the paper's
    ("openvino", "cpu", (16, 64, 64), 1),
    ("torch", "cuda", (16, 64, 64), 1),
])
def test_default_batch_rule(backend, device, tile, expected):
    assert default_batch_size(backend, device, tile) == expected


def test_plan_autocast_dtypes():
    assert NetworkPlan("torch", "fp32", 1).autocast_dtype is None
    assert NetworkPlan("torch", "fp16", 2).autocast_dtype == torch.float16
    assert NetworkPlan("openvino", "bf16", 1).describe() == "openvino bf16, batch 1"


@pytest.fixture(scope="module")
def model_with_ir(tmp_path_factory):
    """A small random model imported with its OpenVINO IR (one fold: the conversion takes seconds)."""
    if not openvino_installed():
        pytest.skip("openvino not installed")
    from inference.weights import import_model
    root = tmp_path_factory.mktemp("ir")
    source = write_preset(root / "source", "tiny", features=(8, 16, 32))
    return import_model(source, root / "imported", ir=True)


@needs_openvino
def test_import_writes_ir_under_the_manifest(model_with_ir):
    manifest = json.loads((model_with_ir / "manifest.json").read_text())
    assert {f"fold_all/{IR_XML}", f"fold_all/{IR_BIN}"} <= set(manifest["files"])
    assert manifest["openvino_ir"] is True
    model = load_model(model_with_ir, precision="fp32")
    assert model.plan == NetworkPlan("openvino", "fp32", model.plan.batch_size)


@needs_openvino
@pytest.mark.parametrize("flags,precision,reason", [
    ({"avx2", "avx512f"}, "fp32", "auto: this CPU has no native bfloat16"),
    ({"avx512f", "avx512_bf16"}, "bf16", "auto: native bfloat16 on this CPU (avx512_bf16 in /proc/cpuinfo)"),
    ({"amx_bf16", "amx_tile"}, "bf16", "auto: native bfloat16 on this CPU (amx_bf16 in /proc/cpuinfo)"),
])
def test_auto_precision_follows_the_cpu_flags(model_with_ir, tmp_path, monkeypatch, capsys, flags, precision, reason):
    """--precision auto with the CPU's flags injected: the plan and the CLI's first line (precision and why);
    --precision fp32 and --backend torch stay fp32 whatever the CPU."""
    import inference.engines.choice as choice
    from inference.cli import main as cli_main
    monkeypatch.setattr(choice, "cpu_flags", lambda: flags)
    choice.native_bf16_evidence.cache_clear()
    try:
        plan = load_model(model_with_ir).plan
        assert (plan.backend, plan.precision) == ("openvino", precision) and plan.reason.startswith(reason)
        assert load_model(model_with_ir, precision="fp32").plan.precision == "fp32"
        assert load_model(model_with_ir, backend="torch").plan.precision == "fp32"
        (tmp_path / "in").mkdir()
        assert cli_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model_with_ir)]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        assert first.startswith(f"precision {precision} ({reason}") and f"(openvino {precision}, batch 1)" in first
    finally:
        choice.native_bf16_evidence.cache_clear()


@needs_openvino
def test_openvino_fp32_argmax_equals_torch_fp32(model_with_ir):
    ov_model = load_model(model_with_ir, backend="openvino", precision="fp32", batch_size=2)
    torch_model = load_model(model_with_ir, backend="torch", precision="fp32")
    torch.manual_seed(3)
    tiles = torch.randn(3, 1, *torch_model.config.patch_size)  # 3 tiles: one full batch of 2, one padded
    with torch.inference_mode():
        reference = torch_model.networks[0](tiles)
    ours = ov_model.networks[0](tiles)
    assert ours.shape == reference.shape and ours.dtype == torch.float32
    assert torch.allclose(ours, reference, atol=1e-3, rtol=1e-3)
    assert torch.equal(ours.argmax(1), reference.argmax(1))
    image = blob_volume((14, 44, 40))[None]
    assert np.array_equal(segment_array(image, (3.0, 1.5, 1.5), ov_model),
                          segment_array(image, (3.0, 1.5, 1.5), torch_model))


@needs_openvino
def test_tampered_ir_is_refused(model_with_ir, tmp_path):
    copy = shutil.copytree(model_with_ir, tmp_path / "copy")
    with open(copy / "fold_all" / IR_BIN, "r+b") as f:
        f.seek(100)
        f.write(b"\x7f\x7f\x7f\x7f")
    with pytest.raises(InferenceError, match=r"fold_all/network.bin: sha256 differs"):
        load_model(copy)
    assert load_model(copy, backend="torch").plan.backend == "torch"  # the torch path never reads the IR


@needs_openvino
@needs_openvino
def test_each_engine_checks_the_files_it_reads(model_with_ir, tmp_path):
    """The manifest check covers what a load reads: OpenVINO reads the IR, not the checkpoint (unless the
    IR lacks the checkpoint's facts), so a changed checkpoint stops torch only."""
    copy = shutil.copytree(model_with_ir, tmp_path / "copy")
    with open(copy / "fold_all" / "checkpoint_final.pth", "r+b") as f:
        f.seek(200)
        f.write(b"\x7f\x7f\x7f\x7f")
    assert load_model(copy, backend="openvino", precision="fp32").plan.backend == "openvino"
    with pytest.raises(InferenceError, match=r"fold_all/checkpoint_final.pth: sha256 differs"):
        load_model(copy, backend="torch")
    # IR written before it carried the facts: the checkpoint is read for them, and checked first
    xml = copy / "fold_all" / IR_XML
    text = xml.read_text()
    assert "<nnunet>" in text
    xml.write_text(re.sub(r"\s*<nnunet>.*?</nnunet>", "", text, flags=re.S))
    add_to_manifest(copy, [f"fold_all/{IR_XML}"])
    with pytest.raises(InferenceError, match=r"fold_all/checkpoint_final.pth: sha256 differs"):
        load_model(copy, backend="openvino", precision="fp32")


def test_network_loaded_to_compile_lazily_compiles_at_first_use(model_with_ir):
    """compile_at_load=False (the localiser's): no compile until engine.prepare or the first call, then
    the same logits as a network compiled at load."""
    eager = load_model(model_with_ir, backend="openvino", precision="fp32")
    lazy = load_model(model_with_ir, backend="openvino", precision="fp32", compile_at_load=False)
    assert not lazy.networks[0]._started and eager.networks[0]._started
    tiles = np.random.default_rng(0).normal(size=(1, 1, *lazy.config.patch_size)).astype(np.float32)
    assert np.array_equal(lazy.networks[0](tiles), eager.networks[0](tiles))
    again = load_model(model_with_ir, backend="openvino", precision="fp32", compile_at_load=False)
    again.engine.prepare(again)
    assert again.networks[0]._started


def test_background_check_raises_in_the_caller(model_with_ir, tmp_path):
    copy = shutil.copytree(model_with_ir, tmp_path / "copy")
    assert start_verifying(copy, ["plans.json", f"fold_all/{IR_BIN}"])() is None
    (copy / "plans.json").write_text((copy / "plans.json").read_text() + " ")
    wait = start_verifying(copy, ["dataset.json", "plans.json"])
    for _ in range(2):   # every call says it
        with pytest.raises(InferenceError, match=r"plans.json: sha256 differs"):
            wait()


def test_folder_without_ir_runs_on_torch_and_ir_can_be_added(tmp_path):
    from inference.cli import main as cli_main
    from inference.weights import main as weights_main
    model_dir = write_preset(tmp_path / "model", "tiny")             # nnU-Net's layout: no IR, no manifest
    assert load_model(model_dir).plan.backend == "torch"
    with pytest.raises(InferenceError, match="no OpenVINO IR"):
        load_model(model_dir, backend="openvino")
    (tmp_path / "in").mkdir()
    assert cli_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model_dir),
                     "--backend", "openvino"]) == 2
    assert weights_main(["ir", str(model_dir)]) == 0
    assert not (model_dir / "manifest.json").exists()                  # none was there; none is invented
    assert load_model(model_dir).plan.backend == "openvino"
    assert not [p for p in (model_dir / "fold_all").iterdir() if p.name.startswith(".")]


def _torch_tiny(tmp_path, **options):
    return load_model(write_preset(tmp_path / "model", "tiny", **options), backend="torch")


@pytest.mark.parametrize("tta", [False, True])
def test_batching_leaves_logits_unchanged(tmp_path, tta):
    model = _torch_tiny(tmp_path, folds=(0,) if tta else (0, 1))
    torch.manual_seed(0)
    data = torch.randn(1, 16, 40, 50)   # 1 x 2 x 3 = 6 tiles of 16x32x32: batches of 4 end with 2
    run = lambda b: predict_logits(data, model.networks, model.num_classes, model.config.patch_size, 0.5,  # noqa: E731
                                   (1, 2) if tta else None, batch_size=b)
    one = run(1)
    assert one.dtype == ACCUMULATION_DTYPE and one.shape == (model.num_classes, 16, 40, 50)
    for batch in (4, 64):
        assert torch.allclose(run(batch), one, rtol=1e-5, atol=1e-5), batch


def test_progress_counts_every_tile_with_batches(tmp_path):
    model = _torch_tiny(tmp_path)
    seen = []
    predict_logits(torch.randn(1, 16, 40, 50), model.networks, model.num_classes, model.config.patch_size,
                   progress=lambda done, total: seen.append((done, total)), batch_size=4)
    assert seen == [(i, 6) for i in range(1, 7)]
    with pytest.raises(ValueError, match="batch size"):
        predict_logits(torch.randn(1, 20, 50, 45), model.networks, model.num_classes, model.config.patch_size,
                       batch_size=0)


def test_accumulation_stays_float32_under_autocast(tmp_path):
    """bf16 autocast (emulated where the CPU lacks it: only the dtype flow is checked here)."""
    model = _torch_tiny(tmp_path)
    data = torch.randn(1, 16, 32, 40)
    low = predict_logits(data, model.networks, model.num_classes, model.config.patch_size,
                         autocast_dtype=torch.bfloat16)
    exact = predict_logits(data, model.networks, model.num_classes, model.config.patch_size)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low.argmax(0) == exact.argmax(0)).float().mean() > 0.9


def test_folder_without_ir_is_refused_where_torch_is_missing(tmp_path, monkeypatch):
    """The torch-free CPU image: a model folder without IR cannot run there; the error says how to convert
    it, and an explicit --backend torch or --device cuda says that torch is missing."""
    import inference.engines.choice as choice
    model_dir = write_preset(tmp_path / "model", "tiny")             # nnU-Net's layout: no IR
    monkeypatch.setattr(choice, "torch_installed", lambda: False)
    with pytest.raises(InferenceError, match=r"no OpenVINO IR .* no torch installed .*"
                                             r"python -m inference.weights ir .*model"):
        load_model(model_dir)
    with pytest.raises(InferenceError, match="--backend torch asked for, but torch is not installed"):
        load_model(model_dir, backend="torch")
    from inference.device import device_type
    assert device_type("auto") == "cpu"                               # even where a GPU driver is present
    import inference.device as device
    monkeypatch.setattr(device, "nvidia_driver_present", lambda: True)
    assert device_type("auto") == "cpu"


@needs_openvino
def test_compile_cache_is_used_only_for_this_cpu(model_with_ir, tmp_path, monkeypatch):
    """FLARE_OPENVINO_CACHE: a cache folder per CPU, made only when asked (image build), read when it is
    there, and another CPU (other flags) gets none; the networks compute the same either way."""
    import inference.engines.choice as choice
    from inference.networks import openvino_network as ovn
    monkeypatch.delenv(ovn.CACHE_ENV, raising=False)
    assert ovn.compile_cache_dir(create=True) is None                 # not asked for: no cache
    tile = np.random.default_rng(1).normal(size=(1, 1, *load_model(model_with_ir).config.patch_size)).astype(np.float32)
    plain = load_model(model_with_ir, precision="fp32").networks[0](tile)

    monkeypatch.setenv(ovn.CACHE_ENV, str(tmp_path / "cache"))
    assert ovn.compile_cache_dir() is None                            # run time never creates it
    folder = ovn.compile_cache_dir(create=True)
    assert folder == str(tmp_path / "cache" / ovn.cpu_cache_key())
    cold = load_model(model_with_ir, precision="fp32").networks[0](tile)
    blobs = sorted(p.name for p in Path(folder).iterdir())
    assert blobs and all(p.endswith(".blob") for p in blobs)
    warm = load_model(model_with_ir, precision="fp32").networks[0](tile)
    assert sorted(p.name for p in Path(folder).iterdir()) == blobs  # read, nothing new written
    np.testing.assert_array_equal(cold, plain)
    np.testing.assert_array_equal(warm, plain)

    import inference.device
    monkeypatch.setattr(inference.device, "cpu_flags", lambda: {"sse2"})   # another CPU: its folder is absent
    assert ovn.cpu_cache_key() != Path(folder).name and ovn.compile_cache_dir() is None


@needs_openvino
def test_compile_failure_is_reported_at_first_use(model_with_ir, monkeypatch):
    from inference.networks import openvino_network as ovn
    network = load_model(model_with_ir, precision="fp32").networks[0]
    failed = ovn.Future()
    failed.set_exception(RuntimeError("Exception from src/plugin.cpp: unsupported layer"))
    monkeypatch.setattr(network, "_ready", failed)
    with pytest.raises(InferenceError, match=r"network.xml: OpenVINO could not compile it .*unsupported layer"):
        network(np.zeros((1, 1, *network.input_shape[2:]), np.float32))


@needs_openvino
def test_a_script_that_loads_a_model_and_exits_at_once_exits_cleanly():
    """The OpenVINO networks compile in a background thread; a script ending while it still compiles
    must wait for it. A daemon thread there aborted the process at exit in 3 of 5 runs ("terminate
    called without an active exception")."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    script = f"from inference.loading import load_model; load_model({str(root / 'weights')!r}, device='cpu')"
    codes = [subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True).returncode
             for _ in range(5)]
    assert codes == [0] * 5, codes
