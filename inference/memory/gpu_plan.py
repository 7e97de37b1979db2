"""Device-memory model of one case, and the plan that keeps the case inside a GPU-memory budget.

FLARE counts the whole device's memory (nvidia-smi's total - free) above 4096 MiB. The budget therefore
includes the CUDA context (driver state, loaded kernels), which torch's allocator never sees: it is
measured once per process after a probe pass (`measure_context_bytes`), and the rest of the budget is
split among the terms below. Every term is an explicit formula in bytes; docs/gpu_memory.md derives
each one from what the code of that stage allocates. The knobs the plan turns, in order of cost:

  logits dtype       fp32 accumulation when it fits, else fp16 (nnU-Net's choice on CUDA)
  tile batch         tiles per network call (1 .. MAX_TILE_BATCH)
  classes per chunk  classes resampled at once in the export (all .. 1)
  allocator cap      torch.cuda.set_per_process_memory_fraction = (budget - context) / device total

Written here (no library plans memory for nnU-Net's inference); pure arithmetic, testable on a CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

MIB = 2 ** 20
FLARE_BUDGET_MIB = 4096          # FLARE 2024: GPU memory above this is what the ranking counts
MAX_TILE_BATCH = 8
# cuDNN/cuBLAS workspaces and allocator rounding/fragmentation: not computable from shapes, so a
# fixed reserve (cuDNN's largest inference workspaces for 3D convolutions stay below it).
RESERVE_BYTES = 256 * MIB
FP32, FP16 = 4, 2
MIN_FRACTION = 1e-4


@dataclass(frozen=True)
class CaseShape:
    """Sizes of one case and model that the memory terms depend on (voxel counts, not shapes)."""
    channels: int              # network input channels C
    classes: int               # output classes K
    image_voxels: int          # V_in: the image as read (before cropping)
    cropped_voxels: int        # V_crop: after cropping to the nonzero box (the export's target grid)
    network_voxels: int        # V_net: resampled to the model's spacing, padded up to the patch
    patch_voxels: int          # P: voxels of one tile
    weights_bytes: int         # fp32 parameters of all folds
    activation_bytes: int      # peak activations of ONE tile's forward pass (probe-measured on CUDA)


def preprocess_bytes(s: CaseShape) -> int:
    """Image on the device (fp32), its cropped copy, and the resampling's intermediate plus output:
    4 C (V_in + V_crop) while cropping, 4 C (2 V_crop + 2 V_net) while resampling (the separate-axis
    path holds the permuted input, the in-plane result and the final permuted copy); the larger."""
    crop = FP32 * s.channels * (s.image_voxels + s.cropped_voxels)
    resample = FP32 * s.channels * (2 * s.cropped_voxels + 2 * s.network_voxels)
    return s.weights_bytes + max(crop, resample) + RESERVE_BYTES


def weights_resident_bytes(s: CaseShape) -> int:
    """fp32 weights plus the fp16 copies autocast caches for the duration of the pass: 1.5 x."""
    return s.weights_bytes + s.weights_bytes // 2


def logits_bytes(s: CaseShape, dtype_bytes: int) -> int:
    """The accumulated logits (K x V_net) and the Gaussian weight sum (V_net), both in the logits dtype."""
    return dtype_bytes * (s.classes + 1) * s.network_voxels


def tiles_bytes(s: CaseShape, batch: int, dtype_bytes: int) -> int:
    """Per tile in flight: its activations, its fp32 input copy, and the prediction plus its
    Gaussian-weighted product in the logits dtype."""
    per_tile = s.activation_bytes + FP32 * s.channels * s.patch_voxels + 2 * dtype_bytes * s.classes * s.patch_voxels
    return batch * per_tile


def network_bytes(s: CaseShape, batch: int, dtype_bytes: int) -> int:
    """Peak of the network stage: weights, fp32 input, logits, tiles in flight, reserve."""
    return (weights_resident_bytes(s) + FP32 * s.channels * s.network_voxels + logits_bytes(s, dtype_bytes)
            + tiles_bytes(s, batch, dtype_bytes) + RESERVE_BYTES)


def export_bytes(s: CaseShape, classes_per_chunk: int, dtype_bytes: int) -> int:
    """Peak of the export: the logits (K x V_net, weight sum freed), one chunk of c classes as fp32 on the
    network grid and resampled (separate-axis path: two copies on the target grid), the running max
    (fp32 value, int64 argmax index, uint8 label: 13 bytes per target voxel) and the uncropped label
    map (V_in bytes)."""
    c = classes_per_chunk
    chunk = FP32 * c * (s.network_voxels + 2 * s.cropped_voxels)
    return (s.weights_bytes + dtype_bytes * s.classes * s.network_voxels + chunk + 13 * s.cropped_voxels
            + s.image_voxels + RESERVE_BYTES)


@dataclass
class MemoryPlan:
    """What the predictor does for one case under a budget, and the terms that led there."""
    budget_bytes: int | None
    context_bytes: int
    logits_dtype_bytes: int
    tile_batch: int
    classes_per_chunk: int | None            # None: all classes at once
    fits: bool                               # False: even the smallest settings exceed the budget
    terms: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        def mib(b):
            return f"{b / MIB:,.0f} MiB"
        chunk = "all" if self.classes_per_chunk is None else str(self.classes_per_chunk)
        budget = "none" if self.budget_bytes is None else mib(self.budget_bytes)
        return (f"budget {budget} (context {mib(self.context_bytes)}): logits fp{8 * self.logits_dtype_bytes}, "
                f"tile batch {self.tile_batch}, classes per export chunk {chunk}; peaks "
                + ", ".join(f"{k} {mib(v)}" for k, v in self.terms.items())
                + ("" if self.fits else " -- does not fit: out-of-memory fallbacks will act"))


def plan_case(s: CaseShape, budget_bytes: int | None, context_bytes: int = 0,
              max_batch: int = MAX_TILE_BATCH) -> MemoryPlan:
    """The most generous settings whose every stage peak fits `budget_bytes - context_bytes`.

    Order: fp32 logits if the network stage fits with one tile, else fp16; then the largest tile batch
    that fits; then the most classes per export chunk that fit. No budget: fp32, max batch, all classes.
    """
    if budget_bytes is None:
        return MemoryPlan(None, context_bytes, FP32, max_batch, None, True,
                          {"preprocess": preprocess_bytes(s), "network": network_bytes(s, max_batch, FP32),
                           "export": export_bytes(s, s.classes, FP32)})
    room = budget_bytes - context_bytes
    dtype = FP32 if network_bytes(s, 1, FP32) <= room else FP16
    batch = 1
    for b in range(max_batch, 0, -1):
        if network_bytes(s, b, dtype) <= room:
            batch = b
            break
    chunk = 1
    for c in range(s.classes, 0, -1):
        if export_bytes(s, c, dtype) <= room:
            chunk = c
            break
    terms = {"preprocess": preprocess_bytes(s), "network": network_bytes(s, batch, dtype),
             "export": export_bytes(s, chunk, dtype)}
    fits = all(v <= room for v in terms.values())
    return MemoryPlan(budget_bytes, context_bytes, dtype, batch, None if chunk >= s.classes else chunk, fits, terms)


def allocator_fraction(budget_bytes: int, context_bytes: int, total_bytes: int) -> float:
    """Fraction for torch.cuda.set_per_process_memory_fraction: the allocator may hold what the budget
    leaves after the context; at least MIN_FRACTION (a budget below the context leaves the allocator
    almost nothing, and every stage then falls back to the CPU)."""
    return min(1.0, max(MIN_FRACTION, (budget_bytes - context_bytes) / total_bytes))


def network_voxels(shape_after_resampling, patch_size) -> int:
    """V_net: the resampled shape padded up to the patch where smaller (as the sliding window pads)."""
    return math.prod(max(a, p) for a, p in zip(shape_after_resampling, patch_size))
