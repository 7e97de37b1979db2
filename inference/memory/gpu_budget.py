"""The GPU-memory budget at run time: measure the context and one tile's activations, cap the allocator,
and plan each case with inference.memory.gpu_plan's arithmetic."""
from __future__ import annotations

import logging
import math

import torch

from inference.memory.gpu_plan import MIB, CaseShape, MemoryPlan, allocator_fraction, network_voxels, plan_case

log = logging.getLogger("inference.memory.gpu_plan")


class GpuBudget:
    """A device-memory budget in MiB for one CUDA device (the whole device's use, context included)."""

    def __init__(self, budget_mib: float | None, device: torch.device | str = "cuda"):
        self.budget_bytes = None if budget_mib is None else int(budget_mib * MIB)
        self.device = torch.device(device)
        self.context_bytes = 0
        self.total_bytes = 0
        self.fraction: float | None = None
        # id(model) -> (model, bytes of one tile's forward pass); the reference keeps the id from being reused
        self._activation: dict[int, tuple[object, int]] = {}

    @property
    def active(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_available()

    def prepare(self, model) -> None:
        """Once per model: probe one tile through every fold (activation peak), then measure the context
        (device use not held by torch's allocator: driver state and the kernels the probe loaded) and
        cap the allocator at what the budget leaves."""
        if not self.active or id(model) in self._activation:
            return
        dev = self.device
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        try:
            probe = torch.zeros((1, model.num_channels, *model.config.patch_size), device=dev)
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                for network in model.networks:
                    network(probe)
            torch.cuda.synchronize(dev)
            self._activation[id(model)] = (model, torch.cuda.max_memory_allocated(dev) - base)
        except torch.cuda.OutOfMemoryError:
            # The device is already full: plan with no activation term; the stages' fallbacks will act.
            log.warning("GPU budget: no memory for one probe tile; planning without its activations")
            self._activation[id(model)] = (model, 0)
        probe = None
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(dev)
        self.total_bytes = total
        self.context_bytes = total - free - torch.cuda.memory_reserved(dev)
        if self.budget_bytes is not None:
            self.fraction = allocator_fraction(self.budget_bytes, self.context_bytes, total)
            torch.cuda.set_per_process_memory_fraction(self.fraction, dev)
        log.info("GPU budget: context %.0f MiB, one tile's activations %.0f MiB, allocator cap %s",
                 self.context_bytes / MIB, self._activation[id(model)][1] / MIB,
                 "none" if self.fraction is None else f"{self.fraction * total / MIB:.0f} MiB")

    def plan(self, model, image_shape, cropped_shape, network_shape) -> MemoryPlan:
        """The plan for one case (shapes without the channel axis)."""
        self.prepare(model)
        weights = sum(p.numel() * p.element_size() for n in model.networks for p in n.parameters())
        shape = CaseShape(channels=model.num_channels, classes=model.num_classes,
                          image_voxels=math.prod(image_shape), cropped_voxels=math.prod(cropped_shape),
                          network_voxels=network_voxels(network_shape, model.config.patch_size),
                          patch_voxels=math.prod(model.config.patch_size), weights_bytes=weights,
                          activation_bytes=self._activation.get(id(model), (None, 0))[1])
        return plan_case(shape, self.budget_bytes, self.context_bytes)
