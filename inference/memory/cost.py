"""What one case will cost, from its header alone, and whether the process can afford it.

`estimate` follows the predictor's stages (inference.files.reading.read_case, then the engine's
preprocess, sliding window and export) and counts the arrays each stage holds at once; the peak is the
largest stage. Symbols (voxel counts, bytes per element):

    V  input voxels (the header's size);  F  input files;  b  bytes per input voxel (the file's type)
    N  network input channels (F, or 12 for a MIND model);  K  classes
    R  resampled grid: the input (uncropped, an upper bound) at the model's spacing, as preprocess
       computes it (round(size * spacing / target) per axis, in the plans' transposed axis order)
    P  padded grid: R grown to the patch where smaller;  T  voxels of one patch
    l  bytes per logit: 4 on the CPU; 2 on CUDA, the least the torch engine accumulates in (fp16, which
       the GPU budget and the out-of-memory fall-backs choose when float32 does not fit)

    held       F*V*4           the stacked float32 input (Volume.data), alive until the case ends
    read       F*V*(2b + 4)    SimpleITK's image, its numpy copy and the float32 copy, per file
               + held          ... while the stacked array is built
    preprocess held + N*V*4    the cropped copy (uncropped size: an upper bound)
               + 2*N*R*4       the resampled image and the in-plane intermediate of anisotropic resampling
               + N*V*4 + 1 GiB MIND models only: the descriptor and its slab work memory
    network    N*R*4 + N*P*4   the preprocessed image and its copy padded to the patch
               + (K+1)*P*l     the logit accumulator and the Gaussian weight sum
               + tile          one patch through the network: T*4*(N + 2K + sum_s f_s/d_s + 4*f_0)
                               (input, prediction and its weighted copy; every encoder stage's output
                               kept for the skips, f_s features at 1/d_s of the patch; the widest layer's
                               convolution, normalisation and decoder concatenation)
    export     held + K*P*l    the logits
      torch    + chunk         classes resampled together: min(K, c)*V*8 with c as export chooses it
                               (resampled fp32 class and its running max)
               + V*23          the running max, argmax index (int64), best class, comparisons
               + V*2           the label map and its numpy copy on the input grid
      numpy    + 16*S          slabs of output planes, S = EXPORT_SLAB_BYTES each: up to 4 threads,
                               each holding a slab's resampled classes, the two neighbours of the axis
                               being interpolated and the running maximum
               + V*2           the label map (uint8) in the cropped and in the whole grid

The torch engine exports classes in chunks, the numpy engine (the default on the CPU) slabs of output
planes (`ModelShape.slab_export`). On CUDA the image stages sit on the device: preprocess, network and
export (less `held` and the numpy copy) are compared with the device's memory, read and the label map
with the host's. On the CPU everything is the host's. The model's weights are already loaded and
counted in what is in use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from inference import InferenceError
from inference.rules.spacing import new_shape_for_spacing

GiB = 1024 ** 3
MiB = 1024 ** 2
MIND_WORK_BYTES = 1 * GiB          # inference.mind.mind_channels' default max_work_bytes
# Resampled fp32 logits of all classes at once above this many bytes are exported in class chunks by
# the torch engine (export_classes_per_chunk).
EXPORT_BUDGET_BYTES = 2 * GiB
# The numpy engine's export slab (inference.engines.numpy_engine.resample.EXPORT_SLAB_BYTES, held equal
# by tests/test_inference_input_checks.py: this module must not import an engine).
EXPORT_SLAB_BYTES = 8 * MiB
# Margin kept free of the estimate: allocator slack, Python objects, the OS page cache we lean on.
MARGIN_FRACTION = 0.10
MARGIN_MIN_BYTES = 512 * MiB
# "Absurd" resampling: a grid over MAX_RESAMPLED_VOXELS that is also more than MAX_UPSAMPLING times the
# image's own voxel count. The largest FLARE MRI (1024x1024x82 at 0.39x0.39x3 mm) resamples to 26 M
# voxels at the paper's 0.78x0.78x2.5 mm, a 768x768x90 scan at 0.6 mm in-plane to 75 M with a ratio
# of 1.4: both pass. A 40x40x20 image at 50 mm (a 2 m field of view) asks for hundreds of millions
# of voxels, thousands of times its own: minutes and gigabytes for no detail the input holds.
MAX_RESAMPLED_VOXELS = 64 * 1024 ** 2
MAX_UPSAMPLING = 8.0
# Where /proc and /sys/fs/cgroup are read from (tests point it at a fake tree).
SYSTEM_ROOT = Path("/")


@dataclass(frozen=True)
class ModelShape:
    """The parts of a model that decide a case's cost (axes in the plans' transposed order)."""
    target_spacing: tuple[float, ...]
    transpose_forward: tuple[int, ...]
    network_channels: int
    num_classes: int
    patch_size: tuple[int, ...]
    features_per_stage: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    mind: bool = False
    slab_export: bool = False   # the engine exports slabs of planes (numpy) rather than class chunks (torch)

    @classmethod
    def of(cls, model) -> "ModelShape":
        """From an inference.loading.LoadedModel."""
        arch = model.config.architecture.get("arch_kwargs", {})
        strides = tuple(tuple(s) if isinstance(s, (list, tuple)) else (s, s, s)
                        for s in arch.get("strides", [(1, 1, 1)]))
        return cls(target_spacing=tuple(model.config.spacing), transpose_forward=tuple(model.transpose_forward),
                   network_channels=model.num_channels, num_classes=model.num_classes,
                   patch_size=tuple(model.config.patch_size),
                   features_per_stage=tuple(arch.get("features_per_stage", [32])), strides=strides,
                   mind=model.mind_params is not None,
                   slab_export=bool(getattr(model.engine, "exports_in_slabs", False)))


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], model: ModelShape) -> tuple[int, ...]:
    """The grid preprocess resamples an uncropped (Z, Y, X) image to, in the same (Z, Y, X) order."""
    tf = model.transpose_forward
    transposed = new_shape_for_spacing([shape[a] for a in tf], [spacing[a] for a in tf], model.target_spacing)
    out = [0] * len(tf)
    for i, a in enumerate(tf):
        out[a] = transposed[i]
    return tuple(out)


def export_classes_per_chunk(num_classes: int, voxels: int, free_device_bytes: int | None = None) -> int | None:
    """Classes the torch engine's export resamples at once: all (None) unless their resampled fp32 logits
    and running maximum (8 bytes a voxel a class) would exceed EXPORT_BUDGET_BYTES, or a third of the
    device's free memory on CUDA."""
    budget = EXPORT_BUDGET_BYTES if free_device_bytes is None else min(EXPORT_BUDGET_BYTES, free_device_bytes // 3)
    per_class = voxels * 8
    if per_class * num_classes <= budget:
        return None
    return max(1, budget // per_class)


def tile_bytes(model: ModelShape) -> int:
    """One patch through the network (see the module docstring)."""
    t = _prod(model.patch_size)
    per_voxel = model.network_channels + 2 * model.num_classes + 4 * model.features_per_stage[0]
    skips, downsampling = 0.0, 1
    for features, stride in zip(model.features_per_stage, model.strides):
        downsampling *= _prod(stride)
        skips += features / downsampling
    return int(t * 4 * (per_voxel + skips))


@dataclass
class Estimate:
    """A case's cost: the grids and the peak bytes per stage, on the host and on the device."""
    input_shape: tuple[int, ...]        # (Z, Y, X)
    resampled_shape: tuple[int, ...]    # (Z, Y, X)
    host: dict[str, int] = field(default_factory=dict)
    device: dict[str, int] = field(default_factory=dict)   # empty on the CPU

    @property
    def host_peak(self) -> int:
        return max(self.host.values())

    @property
    def device_peak(self) -> int:
        return max(self.device.values(), default=0)


def estimate(shape: Sequence[int], spacing: Sequence[float], files: int, bytes_per_voxel: float,
             model: ModelShape, on_cuda: bool = False) -> Estimate:
    """Peak memory of one case of (Z, Y, X) `shape` and `spacing` in `files` files (terms: module doc)."""
    v = _prod(shape)
    new_shape = resampled_shape(shape, spacing, model)
    r = _prod(new_shape)
    p = _prod(max(n, t) for n, t in zip([new_shape[a] for a in model.transpose_forward], model.patch_size))
    f, n, k = files, model.network_channels, model.num_classes
    logit = 2 if on_cuda else 4
    held = f * v * 4
    read = int(f * v * (2 * bytes_per_voxel + 4)) + held
    preprocess = n * v * 4 + 2 * n * r * 4 + ((n * v * 4 + MIND_WORK_BYTES) if model.mind else 0)
    network = n * r * 4 + n * p * 4 + (k + 1) * p * logit + tile_bytes(model)
    if model.slab_export:
        export = k * p * logit + 16 * EXPORT_SLAB_BYTES + 2 * v
    else:
        export = k * p * logit + (export_classes_per_chunk(k, v) or k) * v * 8 + v * 23 + v
    labels = v * 2
    if on_cuda:
        return Estimate(tuple(shape), new_shape, host={"read": read, "export": held + labels},
                        device={"preprocess": f * v * 4 + preprocess, "network": network, "export": export})
    return Estimate(tuple(shape), new_shape,
                    host={"read": read, "preprocess": held + preprocess, "network": held + network,
                          "export": held + export + v})


# --- what the process may use ---------------------------------------------------------------------

def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def _inactive_file(stat_file: Path, key: str) -> int:
    """Reclaimable page cache in a cgroup (docker stats leaves it out of usage too)."""
    try:
        for line in stat_file.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_headroom(root: Path) -> tuple[int, str] | None:
    """(limit - usage, description) of the tightest memory cgroup this process sits in, if limited.

    cgroup v2: memory.max / memory.current along the process's path in /sys/fs/cgroup (a container
    sees its own cgroup as the root). cgroup v1: memory.limit_in_bytes / memory.usage_in_bytes.
    """
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    best: tuple[int, str] | None = None
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":
            base, limit_name, usage_name, stat_key, version = root / "sys/fs/cgroup", "memory.max", \
                "memory.current", "inactive_file", "v2"
        elif "memory" in controllers.split(","):
            base, limit_name, usage_name, stat_key, version = root / "sys/fs/cgroup/memory", \
                "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file", "v1"
        else:
            continue
        parts = [p for p in path.strip().split("/") if p]
        for depth in range(len(parts), -1, -1):  # the cgroup itself and every ancestor
            folder = base.joinpath(*parts[:depth])
            limit = _read_int(folder / limit_name)  # "max" (no limit) reads as None
            if limit is None or limit >= 1 << 60:    # v1 writes "no limit" as a huge number
                continue
            usage = _read_int(folder / usage_name) or 0
            usage -= min(usage, _inactive_file(folder / "memory.stat", stat_key))
            headroom = limit - usage
            if best is None or headroom < best[0]:
                best = (headroom, f"cgroup {version} limit {_gib(limit)} with {_gib(usage)} in use")
    return best


def _mem_available(root: Path) -> int | None:
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True)
class Limit:
    bytes: int
    source: str


def host_limit(root: Path | None = None) -> Limit | None:
    """What the process may still allocate on the host: the smaller of the cgroup's headroom and the
    machine's MemAvailable, less a margin (MARGIN_FRACTION, at least MARGIN_MIN_BYTES). None if unknown.
    `root` is the file-system root to read /proc and /sys/fs/cgroup under (default SYSTEM_ROOT)."""
    root = SYSTEM_ROOT if root is None else root
    candidates = []
    available = _mem_available(root)
    if available is not None:
        candidates.append((available, f"{_gib(available)} available on the machine"))
    cgroup = _cgroup_headroom(root)
    if cgroup is not None:
        candidates.append(cgroup)
    if not candidates:
        return None
    headroom, source = min(candidates)
    margin = max(MARGIN_MIN_BYTES, int(headroom * MARGIN_FRACTION))
    return Limit(max(0, headroom - margin), f"{source}, less a {_gib(margin)} margin")


def device_limit(device) -> Limit:
    """What this process may still allocate on a CUDA device: free memory plus torch's unused cache."""
    import torch
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    headroom = free + cached
    margin = max(MARGIN_MIN_BYTES, int(headroom * MARGIN_FRACTION))
    return Limit(max(0, headroom - margin), f"{_gib(headroom)} free on {device}, less a {_gib(margin)} margin")


# --- the checks -------------------------------------------------------------------------------------

def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def _xyz(values: Sequence, fmt: str = "{}") -> str:
    """A (Z, Y, X) tuple as users see images (SimpleITK, nibabel): x by y by z."""
    return "x".join(fmt.format(v) for v in reversed(tuple(values)))


def check_grid(shape: Sequence[int], spacing: Sequence[float], model: ModelShape, source: str) -> tuple[int, ...]:
    """The resampled (Z, Y, X) grid, or InferenceError naming the spacing when it is empty or absurd."""
    new_shape = resampled_shape(shape, spacing, model)
    target = [0.0] * len(model.transpose_forward)
    for i, a in enumerate(model.transpose_forward):
        target[a] = model.target_spacing[i]
    what = (f"{source}: size {_xyz(shape)} at spacing {_xyz(spacing, '{:g}')} mm resamples to a "
            f"{_xyz(new_shape)} grid at the model's {_xyz(target, '{:g}')} mm")
    if min(new_shape) < 1:
        raise InferenceError(f"{what}: nothing to segment")
    voxels, own = _prod(new_shape), _prod(shape)
    if voxels > MAX_RESAMPLED_VOXELS and voxels > MAX_UPSAMPLING * own:
        raise InferenceError(f"{what} ({voxels / 1e6:.0f} M voxels, {voxels / own:.0f} times the image's "
                             f"own): refused, over {MAX_RESAMPLED_VOXELS // 1024 ** 2} Mi voxels and over "
                             f"{MAX_UPSAMPLING:g}x upsampling (a spacing error?)")
    return new_shape


def check_affordable(cost: Estimate, source: str, host: Limit | None, device: Limit | None = None) -> None:
    """InferenceError naming the estimate and the limit when the case would not fit in memory."""
    checks = [("host", cost.host, host)] + ([("device", cost.device, device)] if cost.device else [])
    for where, stages, limit in checks:
        if limit is None or not stages:
            continue
        stage, peak = max(stages.items(), key=lambda kv: kv[1])
        if peak > limit.bytes:
            raise InferenceError(
                f"{source}: estimated peak {where} memory {_gib(peak)} (stage {stage}; size "
                f"{_xyz(cost.input_shape)} resampled to {_xyz(cost.resampled_shape)}) exceeds the "
                f"{_gib(limit.bytes)} this process may use ({limit.source}); refused before reading")


def check_case(shape: Sequence[int], spacing: Sequence[float], files: int, bytes_per_voxel: float,
               source: str, *, model) -> Estimate:
    """The one pre-read check: grid first (cheap, clearest message), then memory against the limits."""
    shape_of = ModelShape.of(model)
    check_grid(shape, spacing, shape_of, source)
    on_cuda = model.device.type == "cuda"
    cost = estimate(shape, spacing, files, bytes_per_voxel, shape_of, on_cuda)
    check_affordable(cost, source, host_limit(), device_limit(model.device) if on_cuda else None)
    return cost
