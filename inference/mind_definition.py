"""MIND-SSC's definition without torch: offsets, channel pairs, clamp, and the dataset.json convention
of models that take MIND input. Shared by the torch implementation (inference.mind, which documents the
descriptor) and the numpy one (inference.engines.numpy_engine.mind), so the CPU path and the model
loader read a MIND model's dataset.json without importing torch.
"""
from __future__ import annotations

import itertools
import json
import os
from typing import Any

import numpy as np

NUM_CHANNELS = 12

# The six face-neighbour unit offsets (z, y, x), in this order.
OFFSETS: tuple[tuple[int, int, int], ...] = (
    (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))


def _axis(o: tuple[int, int, int]) -> int:
    return next(i for i, v in enumerate(o) if v != 0)


# The 12 pairs (i, j), i < j, of offsets on different axes; channel k of the descriptor is PAIRS[k].
PAIRS: tuple[tuple[int, int], ...] = tuple(
    (i, j) for i, j in itertools.combinations(range(6), 2) if _axis(OFFSETS[i]) != _axis(OFFSETS[j]))
assert len(PAIRS) == NUM_CHANNELS

CLAMP_LOW = 1e-3    # per-voxel variance clamped to [CLAMP_LOW, CLAMP_HIGH] x its whole-volume mean
CLAMP_HIGH = 1e3
PATCHES = ("box", "gaussian")


# ---------------------------------------------------------------------------------------------------
# dataset.json convention for models that take MIND input (see labeltransfer/README.md)

MIND_KEY = "mind"
CHANNEL_PREFIX = "MIND_"
DEFAULT_PARAMS: dict[str, Any] = {"radius": 1, "dilation": 2, "patch": "box", "sigma": 0.8}


def mind_channel_names() -> dict[str, str]:
    """nnU-Net `channel_names` of a MIND dataset: {"0": "MIND_0", ..., "11": "MIND_11"}.

    Names other than "CT"/"noNorm"/... make nnU-Net use z-score normalisation per channel, as the
    paper did.
    """
    return {str(k): f"{CHANNEL_PREFIX}{k}" for k in range(NUM_CHANNELS)}


def check_parameters(radius, dilation, patch: str) -> None:
    """Refuse MIND-SSC parameters no engine can compute (both engines and dataset.json use this)."""
    if int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be an integer >= 0, got {radius}")
    if int(dilation) != dilation or dilation < 1:
        raise ValueError(f"dilation must be an integer >= 1, got {dilation}")
    if patch not in PATCHES:
        raise ValueError(f"patch must be one of {PATCHES}, got {patch!r}")


def mind_dataset_json_entry(radius: int = 1, dilation: int = 2, patch: str = "box",
                            sigma: float = 0.8) -> dict[str, Any]:
    """The "mind" entry that declares MIND input in a dataset.json (parameters of mind_ssc)."""
    check_parameters(radius, dilation, patch)
    return {"radius": int(radius), "dilation": int(dilation), "patch": patch, "sigma": float(sigma)}


def descriptor_channels_from_dataset_json(dataset_json: dict | str | os.PathLike) -> dict[str, Any] | None:
    """MIND parameters declared by a dataset.json, or None for a model on plain intensities.

    The convention: a top-level key "mind" holding the mind_ssc keyword arguments
    {"radius", "dilation", "patch", "sigma"} (missing ones take DEFAULT_PARAMS), and `channel_names`
    exactly {"0": "MIND_0", ..., "11": "MIND_11"}. The predictor computes
    ``mind_ssc(image, **params)`` of the single input image and feeds its 12 channels as channels
    0..11. A dataset.json with only one of the two halves is inconsistent and raises ValueError.

    Args:
        dataset_json: the parsed dict or a path to dataset.json.
    Returns:
        dict of mind_ssc keyword arguments (radius, dilation, patch, sigma) or None.
    """
    where = "dataset.json"
    if not isinstance(dataset_json, dict):
        where = os.fspath(dataset_json)
        with open(where) as f:
            dataset_json = json.load(f)
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    names = list(channels.values()) if isinstance(channels, dict) else []
    has_mind_names = any(str(n).startswith(CHANNEL_PREFIX) for n in names)
    entry = dataset_json.get(MIND_KEY)
    if entry is None:
        if has_mind_names:
            raise ValueError(f"{where}: channel_names look like MIND ({names[:2]}...) but there is no "
                             f"'{MIND_KEY}' entry with the descriptor parameters")
        return None
    if not isinstance(entry, dict):
        # ValueError like every other problem of the file: callers (the predictor) catch one type
        raise ValueError(f"{where}: '{MIND_KEY}' must be an object like {DEFAULT_PARAMS}, got {entry!r}")  # noqa: TRY004
    if channels != mind_channel_names():
        raise ValueError(f"{where}: declares '{MIND_KEY}' input, so channel_names must be "
                         f"{{\"0\": \"MIND_0\", ..., \"11\": \"MIND_11\"}}, got {channels!r}")
    unknown = set(entry) - set(DEFAULT_PARAMS)
    if unknown:
        raise ValueError(f"{where}: unknown '{MIND_KEY}' parameters {sorted(unknown)}; "
                         f"allowed: {sorted(DEFAULT_PARAMS)}")
    params = {**DEFAULT_PARAMS, **entry}
    try:
        return mind_dataset_json_entry(**params)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: invalid '{MIND_KEY}' entry {entry!r}: {e}") from None


def patch_weights(radius: int, patch: str = "box", sigma: float = 0.8):
    """1-D patch weights of length 2*radius+1 in float64, summing to 1; the 3-D patch is their outer
    product. "box": uniform. "gaussian": exp(-t^2 / (2 sigma^2)) for t in [-radius, radius] voxels,
    normalised, so choose radius >= 2*sigma to avoid truncating the Gaussian noticeably. Both engines'
    MIND-SSC take their weights from here (cast to their compute dtype)."""
    if patch == "box":
        w = np.ones(2 * radius + 1)
    elif patch == "gaussian":
        if not sigma > 0:
            raise ValueError(f"gaussian patch needs sigma > 0, got {sigma}")
        t = np.arange(-radius, radius + 1, dtype=np.float64)
        w = np.exp(-t * t / (2.0 * sigma * sigma))
    else:
        raise ValueError(f"patch must be one of {PATCHES}, got {patch!r}")
    return w / w.sum()
