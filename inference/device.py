"""Compute-device choice shared by every tool: `--device auto|cpu|cuda`, default auto (docs/cli.md).

`resolve_device` gives a torch.device (and imports torch). `device_type` answers "cpu" or "cuda" without
importing torch where no NVIDIA driver is present, and HOST_CPU names the CPU for models on the numpy
engine (inference.engines.numpy_engine), which never loads torch: that import alone costs seconds of
start-up and hundreds of MB of resident memory.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from inference import InferenceError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
# Present on every Linux machine with the NVIDIA kernel driver loaded (and in containers given a GPU).
NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


@dataclass(frozen=True)
class HostDevice:
    """The CPU, named without torch: what our code reads of a torch.device (`.type`, `.index`, str())."""
    type: str = "cpu"
    index: None = None

    def __str__(self) -> str:
        return "cpu"


HOST_CPU = HostDevice()


def nvidia_driver_present() -> bool:
    return any(os.path.exists(p) for p in NVIDIA_DRIVER_PATHS)


def device_type(name: str | torch.device | HostDevice) -> str:
    """'cpu' or 'cuda' for a --device value or a device; imports torch only where a GPU may be there."""
    if not isinstance(name, str):
        return name.type
    # auto without torch (the CPU image, even when run with --gpus): the CPU, which needs no torch
    if name == "cpu" or (name == "auto" and (not nvidia_driver_present() or not torch_installed())):
        return "cpu"
    return resolve_device(name).type


def torch_installed() -> bool:
    """torch is importable (looked up without importing it). The CPU image has none."""
    if "torch" in sys.modules:   # imported already, or blocked (None) as the torch-free tests do
        return sys.modules["torch"] is not None
    return importlib.util.find_spec("torch") is not None


def resolve_device(name: str | torch.device | HostDevice) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' (or 'cuda:N') without a GPU is an error."""
    try:
        import torch  # here, so that tools needing only DEVICE_CHOICES (the harness) do not load torch
    except ImportError:
        raise InferenceError(f"--device {name} needs torch, which is not installed here (the CPU image runs "
                             f"the model's OpenVINO IR on the CPU without it); use --device cpu or auto") from None

    if isinstance(name, HostDevice):
        return torch.device("cpu")
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError("--device cuda asked for, but no CUDA device is available")
    return device


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()
