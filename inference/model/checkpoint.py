"""Reading a fold's nnU-Net checkpoint safely (torch.load with weights_only) and the facts it carries."""
from __future__ import annotations

from pathlib import Path

from inference import InferenceError

# Prefixes a state dict carries when saved from a torch.compile'd or DataParallel-wrapped network.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def _numpy_scalar_globals() -> list:
    """numpy reconstructors that nnU-Net training checkpoints need (scalars in their logs): they only
    rebuild numbers and dtypes, so allowing them keeps weights_only loading safe."""
    import numpy as np
    names = [np.dtype, type(np.dtype("float64")), type(np.dtype("float32")), type(np.dtype("int64"))]
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    return [scalar, *names]


def load_checkpoint(path: Path) -> dict:
    """torch.load with weights_only=True: a checkpoint someone handed us must not run code."""
    import torch
    if not path.is_file():
        raise InferenceError(f"{path}: checkpoint not found")
    try:
        if hasattr(torch.serialization, "safe_globals"):
            with torch.serialization.safe_globals(_numpy_scalar_globals()):
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        else:  # torch < 2.5 (the GPU image pins 2.4.1): only the process-wide allowlist exists
            torch.serialization.add_safe_globals(_numpy_scalar_globals())
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... depending on damage
        raise InferenceError(f"{path}: cannot be loaded as a weights-only checkpoint ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}). Re-export it with "
                             f"`python -m inference.weights import`.") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise InferenceError(f"{path}: not an nnU-Net checkpoint (no 'network_weights')")
    return checkpoint


def strip_wrapper_prefixes(state_dict: dict) -> dict:
    """Remove torch.compile / DataParallel prefixes so weights load into a plain network."""
    out = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out
