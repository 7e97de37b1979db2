"""training/: plans narrowing, phantom case plans, and one tiny end-to-end run of the default-model
recipe (nnU-Net planning, preprocessing, trainer, export, evaluation) on a few coarse phantoms."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.data import GEOMETRIES, PhantomCase, check_disjoint, plan_cases, sample_seeds
from training.default_model import build_parser, case_lists, recipe_command
from training.plans import compact_plans, narrow_features
import training.trainer as trainer_module
from training.trainer import CPUAutocast, cpu_bf16_supported, nnUNetTrainerCPUShort

ROOT = Path(__file__).resolve().parent.parent


# --- plans ------------------------------------------------------------------------------------------

def test_narrow_features_doubles_then_caps():
    assert narrow_features(5, 8, 64) == [8, 16, 32, 64, 64]
    assert narrow_features(6, 8, 64) == [8, 16, 32, 64, 64, 64]
    assert narrow_features(3, 4, 4) == [4, 4, 4]
    with pytest.raises(ValueError):
        narrow_features(4, 16, 8)
    with pytest.raises(ValueError):
        narrow_features(0, 8, 64)


def _planned() -> dict:
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320],
                            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]}}
    return {"dataset_name": "Dataset901_X", "plans_name": "nnUNetPlans",
            "configurations": {"2d": {"data_identifier": "nnUNetPlans_2d", "batch_size": 12},
                               "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2,
                                              "patch_size": [40, 128, 128], "architecture": arch}}}


def test_compact_plans_narrows_only_3d_fullres():
    planned = _planned()
    before = copy.deepcopy(planned)
    out = compact_plans(planned, "nnUNetPlansCompact", base_features=8, max_features=64, batch_size=3)
    assert planned == before                                    # input untouched
    assert list(out["configurations"]) == ["3d_fullres"]
    cfg = out["configurations"]["3d_fullres"]
    assert cfg["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 64, 64]
    assert cfg["architecture"]["arch_kwargs"]["strides"] == before["configurations"]["3d_fullres"][
        "architecture"]["arch_kwargs"]["strides"]
    assert cfg["patch_size"] == [40, 128, 128]
    assert cfg["batch_size"] == 3
    assert cfg["data_identifier"] == "nnUNetPlansCompact_3d_fullres"
    assert out["plans_name"] == "nnUNetPlansCompact"
    assert out["dataset_name"] == "Dataset901_X"
    assert compact_plans(planned, "P")["configurations"]["3d_fullres"]["batch_size"] == 2


def test_compact_plans_errors():
    planned = _planned()
    del planned["configurations"]["3d_fullres"]
    with pytest.raises(KeyError, match="3d_fullres"):
        compact_plans(planned, "P")
    planned = _planned()
    del planned["configurations"]["3d_fullres"]["architecture"]
    with pytest.raises(KeyError, match="architecture"):
        compact_plans(planned, "P")
    with pytest.raises(ValueError, match="batch_size"):
        compact_plans(_planned(), "P", batch_size=0)


# --- data -------------------------------------------------------------------------------------------

def test_plan_cases_cycles_modalities_over_consecutive_seeds():
    cases = plan_cases(5, 1000, "t1,t2,ct", "phantom")
    assert cases == [PhantomCase("phantom_01000_t1", 1000, "t1"), PhantomCase("phantom_01001_t2", 1001, "t2"),
                     PhantomCase("phantom_01002_ct", 1002, "ct"), PhantomCase("phantom_01003_t1", 1003, "t1"),
                     PhantomCase("phantom_01004_t2", 1004, "t2")]
    assert plan_cases(2, 7, ["DWI"], "h") == [PhantomCase("h_00007_dwi", 7, "dwi"),
                                              PhantomCase("h_00008_dwi", 8, "dwi")]
    with pytest.raises(ValueError):
        plan_cases(0, 1, "t1", "p")
    with pytest.raises(ValueError):
        plan_cases(3, 1, ",", "p")


def test_plan_cases_cycles_grid_families():
    cases = plan_cases(4, 10, "t1,t2,t1c", "p", geometries="preset,coarse")
    assert [(c.modality, c.geometry) for c in cases] == [("t1", "preset"), ("t2", "coarse"), ("t1c", "preset"),
                                                         ("t1", "coarse")]
    assert GEOMETRIES["coarse"] == {"inplane_range": (1.8, 3.0), "slice_range": (3.5, 6.5)}
    with pytest.raises(ValueError, match="fine"):
        plan_cases(2, 1, "t1", "p", geometries="preset,fine")


def test_check_disjoint_refuses_shared_subjects():
    check_disjoint(plan_cases(10, 1000, "t1", "a"), plan_cases(5, 1010, "t2", "b"))
    with pytest.raises(ValueError, match=r"\[1009\]"):
        check_disjoint(plan_cases(10, 1000, "t1", "a"), plan_cases(5, 1009, "t2", "b"))
    with pytest.raises(ValueError, match=r"\[1001, 1002\]"):
        check_disjoint(plan_cases(10, 1000, "t1", "a"), {1001, 1002})


def test_default_sets_are_disjoint_from_each_other_and_the_samples():
    args = build_parser().parse_args(["--work", "w"])
    train, heldout = case_lists(args)
    assert len(train) == 70 and len(heldout) == 24
    assert {c.modality for c in heldout} == {"t1", "t2", "t1c", "dwi"}
    assert {c.modality for c in train} == {"t1", "t2", "t1c", "dwi", "ct"}
    seeds = {c.seed for c in train}
    assert not seeds & {c.seed for c in heldout} and not seeds & sample_seeds()
    # a training range over the sample subjects is refused
    with pytest.raises(ValueError, match="both sets"):
        case_lists(build_parser().parse_args(["--work", "w", "--train-seed", str(min(sample_seeds()))]))


def test_recipe_command_drops_step_selection():
    assert recipe_command(["--work", "w", "--steps", "train", "--epochs", "3", "--continue"]) == \
        "python -m training.default_model --work w --epochs 3"
    assert recipe_command(["--steps=export", "--out", "o"]) == "python -m training.default_model --out o"


# --- CPU bf16 autocast of the trainer ----------------------------------------------------------------

class _TwoHeads(torch.nn.Module):
    """A conv and a deep-supervision-like list output, like nnU-Net's U-Net returns while training."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return [y, y[:, :, ::2, ::2, ::2]]


def test_cpu_autocast_runs_forward_in_bf16_and_returns_float32():
    torch.manual_seed(0)
    net, x = _TwoHeads(), torch.randn(2, 1, 6, 8, 8)
    reference = net(x)
    inner = []
    net.conv.register_forward_hook(lambda m, a, out: inner.append(out.dtype))
    keys = sorted(net.state_dict())
    hooks = CPUAutocast(net)
    out = net(x)
    assert inner[-1] == torch.bfloat16                      # the convolution ran in bf16
    assert [o.dtype for o in out] == [torch.float32, torch.float32]
    assert isinstance(out, list) and [o.shape for o in out] == [r.shape for r in reference]
    assert torch.allclose(out[0], reference[0], atol=0.05, rtol=0.05)    # bf16 rounding only
    out[0].sum().backward()                                 # gradients reach the fp32 weights
    assert net.conv.weight.grad is not None and net.conv.weight.grad.dtype == torch.float32
    assert sorted(net.state_dict()) == keys                 # checkpoint layout unchanged
    assert not torch.is_autocast_enabled("cpu")            # the context closed after the forward pass
    hooks.remove()
    assert net(x)[0].dtype == torch.float32 and inner[-1] == torch.float32


def test_cpu_autocast_leaves_autocast_off_after_an_error():
    net = _TwoHeads()
    CPUAutocast(net)
    with pytest.raises(RuntimeError):
        net(torch.randn(2, 2, 6, 8, 8))                     # wrong channel count
    assert not torch.is_autocast_enabled("cpu")


def _bare_trainer(device: str) -> nnUNetTrainerCPUShort:
    """The trainer's own set_precision/uses_cpu_bf16 on an instance without nnU-Net's set-up (which
    needs a preprocessed dataset): only the attributes those two read are set."""
    t = object.__new__(nnUNetTrainerCPUShort)
    t.was_initialized, t.device, t.precision = False, torch.device(device), "auto"
    return t


def test_set_precision_names_and_cpu_support(monkeypatch):
    t = _bare_trainer("cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        t.set_precision("fp16")
    assert t.precision == "auto"                            # a refused value changes nothing
    monkeypatch.setattr(trainer_module, "cpu_bf16_supported", lambda: False)
    with pytest.raises(ValueError, match="native bfloat16"):
        t.set_precision("bf16")
    assert not t.uses_cpu_bf16                              # auto falls back to fp32 on such a CPU
    monkeypatch.setattr(trainer_module, "cpu_bf16_supported", lambda: True)
    assert t.uses_cpu_bf16                                  # ... and uses bf16 where the CPU has it
    t.set_precision("fp32")
    assert t.precision == "fp32" and not t.uses_cpu_bf16
    t.set_precision("bf16")
    assert t.uses_cpu_bf16


def test_set_precision_refuses_bf16_on_cuda_and_after_initialize(monkeypatch):
    monkeypatch.setattr(trainer_module, "cpu_bf16_supported", lambda: True)
    t = _bare_trainer("cuda")
    with pytest.raises(ValueError, match="CPU device"):
        t.set_precision("bf16")
    assert not t.uses_cpu_bf16                              # CUDA keeps nnU-Net's own fp16 AMP
    t.was_initialized = True
    with pytest.raises(RuntimeError, match="before initialize"):
        t.set_precision("fp32")


# --- end to end -------------------------------------------------------------------------------------

def test_default_model_recipe_end_to_end(tmp_path):
    """Three coarse phantoms, one epoch of one iteration: every step runs, and the exported folder is
    the stripped nnU-Net layout the predictor loads."""
    work, out = tmp_path / "work", tmp_path / "weights"
    cmd = [sys.executable, "-m", "training.default_model", "--work", str(work), "--out", str(out),
           "--train-cases", "3", "--heldout-cases", "1", "--heldout-seed", "5000",
           "--phantom-spacing", "10", "10", "15", "--spacing", "15", "10", "10",
           "--epochs", "1", "--iterations", "1", "--val-iterations", "1", "--workers", "1", "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # nnU-Net's own folders were used
    pre = work / "nnUNet_preprocessed" / "Dataset901_FLAREPhantoms"
    plans = json.loads((pre / "nnUNetPlansCompact.json").read_text())
    assert list(plans["configurations"]) == ["3d_fullres"]
    assert plans["configurations"]["3d_fullres"]["spacing"] == [15.0, 10.0, 10.0]
    assert (pre / "nnUNetPlansCompact_3d_fullres").is_dir()
    trained = work / "nnUNet_results" / "Dataset901_FLAREPhantoms" / \
        "nnUNetTrainerCPUShort__nnUNetPlansCompact__3d_fullres"
    assert (trained / "fold_all" / "checkpoint_final.pth").is_file()

    # exported folder: stripped checkpoint, narrowed network, provenance and README
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    from inference.engines.choice import openvino_installed
    ir = ["fold_all/network.bin", "fold_all/network.xml"] if openvino_installed() else []  # import writes IR
    assert files == sorted(["README.md", "dataset.json", "fold_all/checkpoint_final.pth", "heldout_scores.csv",
                            "manifest.json", "plans.json", "provenance.json", *ir])
    ckpt = torch.load(out / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert sorted(ckpt) == ["inference_allowed_mirroring_axes", "init_args", "network_weights", "trainer_name"]
    assert ckpt["init_args"] == {"configuration": "3d_fullres"}
    assert ckpt["trainer_name"] == "nnUNetTrainerCPUShort"
    features = json.loads((out / "plans.json").read_text())["configurations"]["3d_fullres"][
        "architecture"]["arch_kwargs"]["features_per_stage"]
    assert features == narrow_features(len(features), 16, 64)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["data"]["train"]["subject_seeds"] == [100000, 100002]
    assert prov["data"]["heldout"]["subject_seeds"] == [5000, 5000]
    assert prov["training"]["epochs"] == 1 and prov["training"]["iterations_per_epoch"] == 1
    assert prov["training"]["precision"] == ("bf16 autocast (forward pass)" if cpu_bf16_supported() else "fp32")
    assert prov["heldout_scores"]["cases"] == 1
    assert set(prov["heldout_scores"]["per_organ"]) >= {"Liver", "Left kidney", "Average"}
    assert prov["packages"]["nnunetv2"]
    assert "| organ | DSC | NSD |" in (out / "README.md").read_text()
    header = (out / "heldout_scores.csv").read_text().splitlines()[0]
    assert header.startswith("Name,Liver_DSC,RK_DSC")

    # the localiser step (training/localizer.py) on the same folder: trained by the shared trainer
    # builder, attached as localizer/, in the manifest and provenance, loaded by the predictor
    readme_before = (out / "README.md").read_bytes()
    cmd = [sys.executable, "-m", "training.default_model", "--work", str(work), "--out", str(out),
           "--steps", "localizer", "--loc-cases", "2", "--loc-geometries", "coarse", "--loc-spacing", "20",
           "--loc-epochs", "1", "--loc-iterations", "1", "--workers", "1", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "localizer" / "fold_all" / "checkpoint_final.pth").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "localizer/fold_all/checkpoint_final.pth" in manifest["files"] and manifest["localizer"]
    loc_ir = {"localizer/fold_all/network.bin", "localizer/fold_all/network.xml"} if openvino_installed() else set()
    assert {f for f in manifest["files"] if f.endswith((".xml", ".bin"))} == set(ir) | loc_ir  # the re-import's IR
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["localizer"]["training"]["epochs"] == 1 and prov["localizer"]["data"]["cases"] == 2
    assert (out / "README.md").read_bytes() == readme_before     # kept by the re-import
    from inference.loading import load_model
    model = load_model(out)
    assert model.localizer is not None and model.localizer.num_classes == 2
    assert model.localizer.config.spacing == (20.0, 20.0, 20.0)
    assert model.localizer.plan.backend == ("openvino" if openvino_installed() else "torch")
