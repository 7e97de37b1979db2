"""No case lost to CUDA out-of-memory: run a stage, and on OOM free memory and try the next, cheaper way.

A stage is a list of (description, callable) attempts: typically the planned settings, then smaller
chunks/batch on the same device, then the CPU. Each fallback is logged (logger `inference.engines.torch_engine.oom`) and
raised as an OutOfMemoryFallback warning, which segment_case records and the CLI prints.
"""
from __future__ import annotations

import gc
import logging
import warnings
from typing import Callable, Sequence, TypeVar

import torch

log = logging.getLogger("inference.engines.torch_engine.oom")
T = TypeVar("T")


class OutOfMemoryFallback(UserWarning):
    """A stage ran out of device memory and was redone with less memory or on the CPU."""


def free_cuda_memory() -> None:
    """Drop unreachable tensors and hand the allocator's cached blocks back to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_fallback(stage: str, attempts: Sequence[tuple[str, Callable[[], T]]], source: str = "image") -> T:
    """Result of the first attempt that does not run out of CUDA memory; the last one's error propagates.

    The OOM error is dropped before memory is freed: its traceback holds the failed attempt's frames and
    with them its tensors.
    """
    for i, (how, attempt) in enumerate(attempts):
        last = i == len(attempts) - 1
        if last:
            return attempt()
        try:
            return attempt()
        except torch.cuda.OutOfMemoryError as e:
            reason = str(e).splitlines()[0][:160] if str(e) else "no detail"
        free_cuda_memory()
        message = (f"{source}: {stage}: CUDA out of memory with {how} ({reason}); "
                   f"freed cached memory, retrying with {attempts[i + 1][0]}")
        log.warning(message)
        warnings.warn(message, OutOfMemoryFallback, stacklevel=2)
    raise AssertionError("unreachable")  # the loop returns or raises on its last attempt
