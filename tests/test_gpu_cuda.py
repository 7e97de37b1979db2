"""CUDA-only checks of the GPU-memory budget and the out-of-memory fallback (skipped without a GPU; run
on one by benchmarks.flare.gpu_check). Imports no SimpleITK: the GPU machine has none."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from testsupport.model_folder import write_preset
from benchmarks.flare.volumes import mri_like_array, table6_spacing
from inference.api import segment_array
from inference.memory.gpu_budget import GpuBudget
from inference.memory.gpu_plan import MIB
from inference.loading import load_model
from inference.engines.torch_engine.oom import OutOfMemoryFallback

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(autouse=True)
def uncapped():
    yield
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


def volume(size_xyz, seed=0):
    spacing = table6_spacing(size_xyz)
    return mri_like_array(size_xyz, spacing, seed)[None].astype(np.float32), tuple(spacing[::-1])


def agreement(a, b):
    return float((a == b).mean())


def test_budget_keeps_the_device_within_it_and_agrees(tmp_path):
    """The FLARE budget on a 320x290x72 case: the plan fits (no fallback), the allocator's peak plus the
    context stays within 4096 MiB, and the labels agree with the run without a budget."""
    model = load_model(write_preset(tmp_path / "small", "small"), device="cuda")
    data, spacing = volume((320, 290, 72))
    free = segment_array(data, spacing, model)
    torch.cuda.empty_cache()
    budget = GpuBudget(4096, "cuda")
    torch.cuda.reset_peak_memory_stats()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capped = segment_array(data, spacing, model, budget=budget)
    assert not [w for w in caught if issubclass(w.category, OutOfMemoryFallback)]
    assert budget.fraction is not None and budget.context_bytes > 0
    peak = torch.cuda.max_memory_reserved()
    assert peak + budget.context_bytes <= 4096 * MIB, (peak / MIB, budget.context_bytes / MIB)
    assert agreement(free, capped) > 0.999


def test_tight_cap_falls_back_to_the_cpu_and_matches_it(tmp_path):
    model_dir = write_preset(tmp_path / "small", "small")
    data, spacing = volume((160, 160, 48), seed=3)
    reference = segment_array(data, spacing, load_model(model_dir, device="cpu"))
    model = load_model(model_dir, device="cuda")
    budget = GpuBudget(64, "cuda")   # below the context: the allocator may hold ~0, every stage falls back
    with pytest.warns(OutOfMemoryFallback, match="CUDA out of memory") as caught:
        labels = segment_array(data, spacing, model, budget=budget)
    assert any("retrying with the CPU" in str(w.message) for w in caught)
    assert agreement(labels, reference) > 0.999


def test_gpu_matches_cpu_on_the_default_model():
    from inference.api import DEFAULT_MODEL_DIR
    data, spacing = volume((192, 192, 60), seed=5)
    cpu = segment_array(data, spacing, load_model(DEFAULT_MODEL_DIR, device="cpu"))
    gpu = segment_array(data, spacing, load_model(DEFAULT_MODEL_DIR, device="cuda"),
                        budget=GpuBudget(4096, "cuda"))
    assert agreement(cpu, gpu) > 0.999
