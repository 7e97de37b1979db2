"""The one place where a model load chooses its engine: which network runtime (torch or OpenVINO, hence
the torch or the numpy engine), on which device, in which precision, and how many tiles at once.

Choices are made once per model load, from the device, the model folder (does it carry OpenVINO IR?),
the installed packages and the CPU's instruction set, so that a run never depends on a CPU's name:

    backend   auto: OpenVINO on the CPU when the folder has IR and the package is installed, else torch;
                    CUDA is always torch.
    precision auto: bf16 for OpenVINO on a CPU that computes bfloat16 natively (AVX512-BF16 or AMX-BF16:
                    about 3x faster than float32 on the default model, labels within
                    benchmarks.path_agreement's gate), float32 on every other CPU and for torch on the CPU
                    (the exact reference engine; its bf16 autocast was never measured against that gate),
                    fp16 autocast on CUDA (as nnU-Net does). The CLI's first line says which precision
                    and why (NetworkPlan.reason).
              fp32: exact; OpenVINO f32 agrees with torch fp32 to the last argmax on our models.
              bf16: on the CPU only where the instruction set has native bfloat16, since emulated bf16 is
                    slower than float32; on CUDA where torch says so.
              fp16: CUDA only (CPUs here have no fast fp16 convolution).

Logits always accumulate in float32 (both engines' sliding windows): it cannot overflow, unlike the fp16
buffer nnU-Net uses.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference import InferenceError
from inference.device import HOST_CPU, cpu_flags, device_type, resolve_device, torch_installed
from inference.engines.numpy_engine.engine import NumpyEngine
from inference.model.loaded import NetworkPlan

if TYPE_CHECKING:

    from inference.engines.base import Engine

BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# OpenVINO IR of one fold, written by `python -m inference.weights import` beside its checkpoint.
IR_XML = "network.xml"
IR_BIN = "network.bin"
# CPU flags (Linux /proc/cpuinfo) that mean native bfloat16 arithmetic in oneDNN's convolutions.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def native_bf16_evidence() -> str | None:
    """What says this CPU computes bfloat16 natively, in words, or None where nothing does.

    /proc/cpuinfo's flags decide wherever they can be read (no library is imported: torch alone costs
    about 2 s of start-up). Without them, OpenVINO's or else torch's own check, whichever is installed;
    with neither (a torch-free image on a system without /proc/cpuinfo), no.
    """
    flags = cpu_flags()
    if flags:
        present = sorted(flags & set(NATIVE_BF16_FLAGS))
        return f"{', '.join(present)} in /proc/cpuinfo" if present else None
    if openvino_installed():
        try:
            import openvino as ov
            if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
                return "OpenVINO's CPU capabilities list BF16"
        except RuntimeError:
            pass
        return None
    if torch_installed():
        import torch
        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return "oneDNN (torch) reports bf16 support"
        except (AttributeError, RuntimeError):
            pass
    return None


def cpu_has_native_bf16() -> bool:
    """True if the CPU computes bfloat16 natively (native_bf16_evidence)."""
    return native_bf16_evidence() is not None


def openvino_installed() -> bool:
    """OpenVINO is importable (looked up without importing it: the import costs start-up time)."""
    return importlib.util.find_spec("openvino") is not None


def fold_has_ir(fold_dir: Path) -> bool:
    return (fold_dir / IR_XML).is_file() and (fold_dir / IR_BIN).is_file()


def choose_backend(requested: str, device_type: str, ir_present: bool, openvino_available: bool) -> str:
    """Resolve --backend. Explicit requests that cannot be met are errors, `auto` falls back to torch."""
    if requested not in BACKENDS:
        raise InferenceError(f"backend must be one of {BACKENDS}, got {requested!r}")
    if requested == "torch":
        return "torch"
    usable = device_type == "cpu" and ir_present and openvino_available
    if requested == "auto":
        return "openvino" if usable else "torch"
    if device_type != "cpu":
        raise InferenceError("--backend openvino runs on the CPU only; use --device cpu or --backend torch")
    if not openvino_available:
        raise InferenceError("--backend openvino asked for, but the openvino package is not installed "
                             "(pip install openvino)")
    if not ir_present:
        raise InferenceError("--backend openvino asked for, but the model folder has no OpenVINO IR "
                             f"(fold_<f>/{IR_XML}); add it with `python -m inference.weights ir MODEL_DIR`")
    return "openvino"


def require_torch_if_chosen(engine: str, requested: str, model_dir: Path) -> None:
    """Refuse, saying how to fix it, a torch engine where torch is not installed (the CPU image runs IR)."""
    if engine != "torch" or torch_installed():
        return
    if requested == "torch":
        raise InferenceError("--backend torch asked for, but torch is not installed here (the CPU image runs "
                             "the model's OpenVINO IR without torch); use --backend auto")
    raise InferenceError(f"{model_dir}: no OpenVINO IR (fold_<f>/{IR_XML}) and no torch installed to run the "
                         f"checkpoints (the CPU image runs IR only). Convert the folder where torch and "
                         f"openvino are installed: python -m inference.weights ir {model_dir}")


def choose_precision(requested: str, device_type: str, native_bf16: bool, cuda_bf16: bool = False,
                     engine: str = "torch") -> str:
    """Resolve --precision for a device and engine (choose_backend's); `native_bf16` is the CPU's,
    `cuda_bf16` the GPU's support."""
    if requested not in PRECISIONS:
        raise InferenceError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "auto":
        if device_type == "cuda":
            return "fp16"
        return "bf16" if native_bf16 and engine == "openvino" else "fp32"
    if requested == "fp16" and device_type != "cuda":
        raise InferenceError("--precision fp16 is for CUDA; on the CPU use fp32 (exact) or bf16")
    if requested == "bf16":
        if device_type == "cpu" and not native_bf16:
            raise InferenceError("--precision bf16 needs a CPU with native bfloat16 (avx512_bf16 or amx_bf16 "
                                 "in /proc/cpuinfo); this one would emulate it, slower than fp32")
        if device_type == "cuda" and not cuda_bf16:
            raise InferenceError("--precision bf16 asked for, but this GPU has no bfloat16 support")
    return requested


def precision_reason(requested: str, precision: str, device_type: str, evidence: str | None = None,
                     engine: str = "torch") -> str:
    """Why `precision` runs, in words for the CLI's first line; `evidence`: native_bf16_evidence()."""
    if requested != "auto":
        return f"--precision {requested}"
    if device_type == "cuda":
        return "auto: fp16 autocast on CUDA, as nnU-Net"
    if precision == "bf16":
        return f"auto: native bfloat16 on this CPU ({evidence}); --precision fp32 for exact float32"
    if engine != "openvino":
        return "auto: torch on the CPU runs float32 (bf16 is auto for OpenVINO only)"
    return "auto: this CPU has no native bfloat16 (avx512_bf16 or amx_bf16)"


# torch on the CPU gains from batching while a batch stays small. Measured on the 2-core EPYC at load 2
# (benchmarks/results/network_limit_quiet/), ms per tile at batch 1 / 2 / 4: a 16x64x64 tile (65,536
# voxels) 51.0 / 16.8 / 16.5, the default model's 32x80x96 (245,760 voxels) 433 / 348 / 444; OpenVINO
# gains nothing (8.9 / 8.7 / 9.1 and 173 / 182 / 200). So torch batches up to 2^19 voxels.
TORCH_CPU_BATCH_VOXELS = 1 << 19
MAX_DEFAULT_BATCH = 4


def default_batch_size(backend: str, device_type: str, patch_size: tuple[int, ...]) -> int:
    """Tiles per network call when none is given: the measured rule above.

    OpenVINO: 1. torch on the CPU: the largest power of two <= 4 whose batch holds at most 2^19 voxels.
    CUDA: 1 (nnU-Net's), until a measurement says otherwise; pass batch_size to predict_logits (the GPU
    memory budget does) to change it.
    """
    if backend != "torch" or device_type != "cpu":
        return 1
    voxels = 1
    for size in patch_size:
        voxels *= int(size)
    batch = 1
    while batch * 2 <= MAX_DEFAULT_BATCH and batch * 2 * voxels <= TORCH_CPU_BATCH_VOXELS:
        batch *= 2
    return batch


@dataclass(frozen=True)
class EngineChoice:
    """The engine settings a model load resolves before it reads its networks."""
    backend: str     # "torch" or "openvino"
    precision: str
    device: Any      # a torch.device, or HOST_CPU for OpenVINO (no torch imported)
    reason: str = ""   # why this precision (precision_reason), for the CLI's first line

    def plan(self, batch_size: int | None, patch_size: tuple[int, ...]) -> NetworkPlan:
        """The full plan once the patch size is known (it decides the default tile batch)."""
        if batch_size is not None and batch_size < 1:
            raise InferenceError(f"batch size must be >= 1, got {batch_size}")
        return NetworkPlan(self.backend, self.precision,
                           batch_size or default_batch_size(self.backend, self.device.type, patch_size), self.reason)


def choose_engine(backend: str, precision: str, device, ir_present: bool, model_dir: Path) -> EngineChoice:
    """Resolve --backend, --device and --precision for a model folder (`ir_present`: every fold has IR)."""
    kind = device_type(device)   # without importing torch where no GPU can be there
    chosen = choose_backend(backend, kind, ir_present, openvino_installed())
    require_torch_if_chosen(chosen, backend, model_dir)   # the torch-free CPU image: say how to convert
    # OpenVINO runs on the host CPU without torch (the numpy engine); everything else is torch's.
    device = HOST_CPU if chosen == "openvino" else resolve_device(device)
    cuda_bf16 = kind == "cuda" and precision == "bf16" and _cuda_bf16_supported()
    evidence = native_bf16_evidence() if kind == "cpu" and precision in ("auto", "bf16") else None
    resolved = choose_precision(precision, kind, evidence is not None, cuda_bf16, chosen)
    return EngineChoice(chosen, resolved, device, precision_reason(precision, resolved, kind, evidence, chosen))


def _cuda_bf16_supported() -> bool:
    import torch
    return torch.cuda.is_bf16_supported()


def engine_for(plan: NetworkPlan, device) -> Engine:
    """The engine that runs a model with this plan: the numpy engine for OpenVINO networks (it never
    imports torch), the torch engine for torch modules."""
    if plan.backend == "openvino":
        return NumpyEngine()
    from inference.engines.torch_engine.engine import TorchEngine
    return TorchEngine(device)
