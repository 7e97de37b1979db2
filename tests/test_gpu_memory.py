"""inference.memory.gpu_plan's arithmetic, with exact values (pure arithmetic: runs on a CPU)."""
from __future__ import annotations

import pytest

from inference.memory.gpu_plan import (
    FP16,
    FP32,
    MIB,
    RESERVE_BYTES,
    CaseShape,
    allocator_fraction,
    export_bytes,
    logits_bytes,
    network_bytes,
    network_voxels,
    plan_case,
    preprocess_bytes,
    tiles_bytes,
    weights_resident_bytes,
)

R = 268_435_456  # RESERVE_BYTES, 256 MiB
SHAPE = CaseShape(channels=1, classes=14, image_voxels=1000, cropped_voxels=800, network_voxels=2000,
                  patch_voxels=100, weights_bytes=4000, activation_bytes=10_000)


def test_reserve_is_256_mib():
    assert RESERVE_BYTES == R == 256 * MIB


def test_terms():
    # crop 4*1*(1000+800)=7200 < resample 4*1*(1600+4000)=22400; + weights 4000 + reserve
    assert preprocess_bytes(SHAPE) == 22_400 + 4000 + R
    assert weights_resident_bytes(SHAPE) == 6000
    assert logits_bytes(SHAPE, FP32) == 4 * 15 * 2000 == 120_000
    assert logits_bytes(SHAPE, FP16) == 60_000
    # per tile: 10000 activations + 4*1*100 input + 2*dtype*14*100 prediction and weighted product
    assert tiles_bytes(SHAPE, 1, FP32) == 21_600
    assert tiles_bytes(SHAPE, 3, FP16) == 3 * 16_000
    # 6000 weights + 8000 input + logits + tiles + reserve
    assert network_bytes(SHAPE, 2, FP32) == 6000 + 8000 + 120_000 + 43_200 + R
    assert network_bytes(SHAPE, 1, FP16) == 6000 + 8000 + 60_000 + 16_000 + R
    # 4000 weights + dtype*14*2000 logits + 4*c*(2000+1600) chunk + 13*800 running max + 1000 labels
    assert export_bytes(SHAPE, 1, FP32) == 4000 + 112_000 + 14_400 + 10_400 + 1000 + R
    assert export_bytes(SHAPE, 14, FP16) == 4000 + 56_000 + 201_600 + 10_400 + 1000 + R


@pytest.mark.parametrize("room, dtype, batch, chunk, fits", [
    (200_000, FP32, 3, 5, True),       # fp32 network fits (155,600); 134,000 + 21,600 b; 127,400 + 14,400 c
    (150_000, FP16, 4, 5, True),       # fp32 does not; fp16: 74,000 + 16,000 b; 71,400 + 14,400 c
    (80_000, FP16, 1, 1, False),       # even batch 1 (90,000) and one class (85,800) exceed it
    (10 ** 9, FP32, 8, None, True),    # everything fits: all classes at once
])
def test_plan_under_a_budget(room, dtype, batch, chunk, fits):
    context = 1000
    plan = plan_case(SHAPE, budget_bytes=R + context + room, context_bytes=context)
    assert (plan.logits_dtype_bytes, plan.tile_batch, plan.classes_per_chunk, plan.fits) == (dtype, batch, chunk, fits)
    assert plan.terms["network"] == network_bytes(SHAPE, batch, dtype)
    assert plan.terms["export"] == export_bytes(SHAPE, chunk or 14, dtype)
    assert "tile batch" in plan.describe()


def test_no_budget_is_the_most_generous_plan():
    plan = plan_case(SHAPE, None, 123)
    assert (plan.logits_dtype_bytes, plan.tile_batch, plan.classes_per_chunk, plan.fits) == (FP32, 8, None, True)
    assert plan_case(SHAPE, None, max_batch=2).tile_batch == 2


def test_allocator_fraction():
    assert allocator_fraction(5000, 1000, 100_000) == 0.04
    assert allocator_fraction(500, 1000, 100_000) == 1e-4     # context above the budget: almost nothing
    assert allocator_fraction(200_000, 0, 100_000) == 1.0


def test_network_voxels_pad_to_the_patch():
    assert network_voxels((10, 20, 30), (16, 16, 16)) == 16 * 20 * 30
    assert network_voxels((40, 192, 224), (40, 192, 224)) == 40 * 192 * 224


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_gpu_budget_measures_context_caps_the_allocator_and_plans(tmp_path, monkeypatch):
    """GpuBudget's wiring with torch.cuda's queries replaced by fixed numbers (no GPU here): the context
    is total - free - reserved after the probe, the cap is (budget - context) / total, and the plan
    uses the probed activations. The probe itself runs on the CPU model."""
    import torch

    from testsupport.model_folder import write_preset
    from inference.memory.gpu_budget import GpuBudget
    from inference.memory.gpu_plan import export_bytes, network_bytes
    from inference.loading import load_model
    model = load_model(write_preset(tmp_path / "tiny", "tiny"))
    allocated = iter([1000, 1000 + 5 * MIB])   # before the probe, peak during it
    caps = []
    for name, fn in {"synchronize": lambda *a: None, "reset_peak_memory_stats": lambda *a: None,
                     "empty_cache": lambda *a: None,
                     "memory_allocated": lambda *a: next(allocated), "max_memory_allocated": lambda *a: next(allocated),
                     "mem_get_info": lambda *a: (100_000 * MIB, 140_000 * MIB),
                     "memory_reserved": lambda *a: 20 * MIB,
                     "set_per_process_memory_fraction": lambda f, d=None: caps.append(f)}.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    budget = GpuBudget(4096, "cpu")
    monkeypatch.setattr(GpuBudget, "active", property(lambda self: True))
    plan = budget.plan(model, (12, 40, 40), (12, 40, 40), (16, 54, 54))
    assert budget.context_bytes == (140_000 - 100_000 - 20) * MIB
    # a 4096 MiB budget below a 39,980 MiB context: the allocator keeps the minimum fraction
    assert caps == [1e-4] and budget.fraction == 1e-4
    assert plan.context_bytes == budget.context_bytes and not plan.fits
    weights = sum(p.numel() * 4 for p in model.networks[0].parameters())
    shape = CaseShape(channels=1, classes=14, image_voxels=12 * 40 * 40, cropped_voxels=12 * 40 * 40,
                      network_voxels=16 * 54 * 54, patch_voxels=16 * 32 * 32, weights_bytes=weights,
                      activation_bytes=5 * MIB)
    assert plan.terms["network"] == network_bytes(shape, 1, FP16)
    assert plan.terms["export"] == export_bytes(shape, 1, FP16)
    budget.prepare(model)          # once per model: no second probe, no second cap
    assert caps == [1e-4]


def test_profile_reports_max_and_auc_above_the_tolerance():
    from benchmarks.flare.profile_case import gpu_memory_summary, markdown
    g = gpu_memory_summary({"source": "nvml", "memory": [4000.0, 5000.0, 4196.0]})
    assert g == {"source": "nvml", "samples": 3, "max_mib": 5000.0, "auc_mib_s": 1320.0, "tolerance_mib": 4096.0,
                 "auc_above_tolerance_mib_s": pytest.approx(100.4)}
    res = {"case": "c", "image_size": [4, 4, 4], "device": "GPU", "model": "m", "tta": False, "step_size": 0.5,
           "torch_threads": 1, "total_seconds": 1.0, "gpu_memory_budget_mib": 4096, "gpu_memory": g,
           "stages": {"network": {"seconds": 1.0, "rss_peak_mib": 10, "torch_peak_allocated_mib": 900}}}
    assert "max 5,000 MiB, AUC 1,320 MiB·s, above 4,096 MiB 100 MiB·s; budget 4096" in markdown(res)
