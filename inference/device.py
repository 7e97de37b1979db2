"""Compute-device choice shared by every tool: `--device auto|cpu|cuda` (docs/cli.md)."""
from __future__ import annotations

import torch

from inference import InferenceError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' (or 'cuda:N') without a GPU is an error."""
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError("--device cuda asked for, but no CUDA device is available")
    return device
