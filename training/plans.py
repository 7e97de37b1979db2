"""Turn nnU-Net's planned experiment into the compact default-model plans.

nnU-Net's ExperimentPlanner decides spacing, patch size, pooling topology, kernel sizes and batch size
for a 32-feature U-Net. The default model keeps all of that for the 3d_fullres configuration and only
narrows the feature widths (so the checkpoint is a few MB and a CPU can train it); the other
configurations (2d, 3d_lowres, cascade) are dropped because they are never trained.
"""
from __future__ import annotations

import copy

CONFIGURATION = "3d_fullres"


def narrow_features(num_stages: int, base: int, cap: int) -> list[int]:
    """Feature widths per stage: base doubled at each stage, capped: (5, 8, 64) -> [8, 16, 32, 64, 64]."""
    if num_stages < 1 or base < 1 or cap < base:
        raise ValueError(f"need num_stages >= 1 and 1 <= base <= cap, got {num_stages}, {base}, {cap}")
    return [min(base * 2 ** i, cap) for i in range(num_stages)]


def compact_plans(plans: dict, plans_name: str, base_features: int = 8, max_features: int = 64,
                  batch_size: int | None = None) -> dict:
    """A copy of `plans` with only the 3d_fullres configuration, its U-Net's features_per_stage
    narrowed (see narrow_features), `batch_size` if given, `plans_name` set and the configuration's
    data_identifier set to <plans_name>_3d_fullres.

    Raises KeyError naming what is missing if the plans have no 3d_fullres U-Net architecture.
    """
    configs = plans.get("configurations", {})
    if CONFIGURATION not in configs:
        raise KeyError(f"plans have no '{CONFIGURATION}' configuration (have: {sorted(configs)})")
    cfg = copy.deepcopy(configs[CONFIGURATION])
    if cfg.get("inherits_from"):
        raise ValueError(f"'{CONFIGURATION}' inherits from '{cfg['inherits_from']}'; expected a full "
                         f"configuration as nnU-Net's planner writes it")
    try:
        arch = cfg["architecture"]["arch_kwargs"]
        n_stages = int(arch["n_stages"])
    except KeyError as e:
        raise KeyError(f"'{CONFIGURATION}' has no architecture.arch_kwargs entry {e}") from None
    arch["features_per_stage"] = narrow_features(n_stages, base_features, max_features)
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        cfg["batch_size"] = int(batch_size)
    # own preprocessed-data folder name, so it never mixes with data preprocessed for other plans
    cfg["data_identifier"] = f"{plans_name}_{CONFIGURATION}"
    out = copy.deepcopy({k: v for k, v in plans.items() if k != "configurations"})
    out["plans_name"] = plans_name
    out["configurations"] = {CONFIGURATION: cfg}
    return out
