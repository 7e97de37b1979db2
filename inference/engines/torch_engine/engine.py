"""The torch engine behind the seam of inference.engines.base: tensors on the compute device, and no case
lost to CUDA out-of-memory.

Each stage is tried with the planned settings (the GPU memory budget's tile batch, logits dtype and
export chunking: inference.memory), then with less memory on the device, then on the CPU
(inference.engines.torch_engine.oom). On the CPU the first attempt is the only one ever needed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from inference.engines.base import Window
from inference.engines.torch_engine.export import logits_to_segmentation
from inference.engines.torch_engine.oom import run_with_fallback
from inference.engines.torch_engine.preprocess import preprocess
from inference.engines.torch_engine.sliding_window import predict_logits
from inference.memory.gpu_plan import FP16, MemoryPlan
from inference.networks.torch_network import cpu_copies
from inference.rules.preprocessing import Preprocessed
from inference.rules.region import Region, RegionLogits

if TYPE_CHECKING:
    from inference.memory.gpu_budget import GpuBudget
    from inference.model.loaded import LoadedModel

CPU = torch.device("cpu")


@dataclass(frozen=True)
class TorchStages:
    """The torch functions behind the three stages (a test hands in ones that run out of memory)."""
    preprocess: Callable = preprocess
    predict_logits: Callable = predict_logits
    export: Callable = logits_to_segmentation


class TorchEngine:
    """CUDA, or the CPU with `--backend torch`. `device`: where the model's networks sit."""
    name = "torch"
    exports_in_slabs = False   # class chunks instead (inference.memory.cost)

    def __init__(self, device: torch.device, stages: TorchStages = TorchStages()):
        self.device = device
        self.cuda = device.type == "cuda"
        self.stages = stages

    def preprocess(self, image, spacing, model: LoadedModel, source: str,
                   budget: GpuBudget | None = None, shared: dict | None = None) -> Preprocessed:
        """`shared` is not used: the torch engine preprocesses on the device, where holding the crop
        between the localiser and the model would cost device memory."""
        if self._planning(budget):
            budget.prepare(model)   # once per model: measures the context, caps the allocator
        run = self.stages.preprocess
        return run_with_fallback("preprocess", [
            ("the planned settings", lambda: run(image, spacing, model, source)),
            ("the cache emptied", lambda: run(image, spacing, model, source)),
            ("the CPU", lambda: run(image, spacing, replace(model, device=CPU), source)),
        ], source)

    def predict_logits(self, prep: Preprocessed, model: LoadedModel, window: Window, source: str,
                       budget: GpuBudget | None = None, region: Region | None = None) -> torch.Tensor | RegionLogits:
        autocast = model.plan.autocast_dtype
        planned = {"batch_size": model.plan.batch_size, "autocast_dtype": autocast}
        plan = self._memory_plan(prep, model, budget, tuple(prep.data.shape[1:]))
        if plan is not None:
            planned.update(batch_size=plan.tile_batch,
                           logits_dtype=torch.float16 if plan.logits_dtype_bytes == FP16 else torch.float32)
        smaller = {"batch_size": 1, "autocast_dtype": autocast}
        if self.cuda:
            smaller["logits_dtype"] = torch.float16
        where = {} if region is None else {"region": region.network, "grid": region.grid}

        def run(device: torch.device, networks, **options) -> torch.Tensor | RegionLogits:
            return self.stages.predict_logits(prep.data.to(device), networks, model.num_classes,
                                              model.config.patch_size, window.step_size, window.mirror_axes,
                                              window.progress, **options, **where)

        how = ", ".join(f"{k} {v}" for k, v in smaller.items() if k != "autocast_dtype")
        return run_with_fallback("network", [
            ("the planned settings", lambda: run(self.device, model.networks, **planned)),
            (how, lambda: run(self.device, model.networks, **smaller)),
            ("the CPU", lambda: run(CPU, cpu_copies(model))),
        ], source)

    def export(self, logits: torch.Tensor | RegionLogits, prep: Preprocessed, model: LoadedModel, source: str,
               budget: GpuBudget | None = None, region: Region | None = None) -> np.ndarray:
        shape = tuple(logits.shape[1:]) if region is None else region.network_shape
        plan = self._memory_plan(prep, model, budget, shape)
        chunk = None if plan is None else plan.classes_per_chunk
        run = partial(self.stages.export, region=region) if region is not None else self.stages.export
        return run_with_fallback("export", [
            ("the planned settings", lambda: run(logits, prep, model, chunk)),
            ("one class per chunk", lambda: run(logits, prep, model, 1)),
            ("the CPU", lambda: run(on_cpu(logits), prep, model)),
        ], source)

    def foreground(self, logits: torch.Tensor) -> np.ndarray:
        return (logits.argmax(0) > 0).cpu().numpy()

    def memory_budget(self, budget_mib: float | None) -> GpuBudget | None:
        if not self.cuda:
            return None
        from inference.memory.gpu_budget import GpuBudget
        return GpuBudget(budget_mib, self.device)

    def prepare(self, model: LoadedModel) -> None:
        pass                                # torch modules are ready when loaded

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def release(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()

    def _planning(self, budget: GpuBudget | None) -> bool:
        return self.cuda and budget is not None and budget.active

    def _memory_plan(self, prep: Preprocessed, model: LoadedModel, budget: GpuBudget | None,
                     network_shape: tuple[int, ...]) -> MemoryPlan | None:
        """The budget's plan for this case (pure arithmetic on the case's shapes), None without one."""
        if not self._planning(budget):
            return None
        return budget.plan(model, prep.shape_before_cropping, prep.shape_after_cropping, network_shape)


def on_cpu(logits: torch.Tensor | RegionLogits) -> torch.Tensor | RegionLogits:
    """The logits (or a region's) moved to the CPU, for the last export attempt."""
    if isinstance(logits, RegionLogits):
        return replace(logits, data=logits.data.cpu())
    return logits.cpu()
