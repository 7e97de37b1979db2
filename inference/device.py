"""Compute-device choice shared by every tool: `--device auto|cpu|cuda`, default auto (docs/cli.md)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from inference import InferenceError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' (or 'cuda:N') without a GPU is an error."""
    import torch  # here, so that tools needing only DEVICE_CHOICES (the harness) do not load torch

    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError("--device cuda asked for, but no CUDA device is available")
    return device
