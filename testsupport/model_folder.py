"""Write standard nnU-Net v2 trained-model folders with random weights, for tests and benchmarks.

A folder written here is what `nnUNetv2_train` leaves behind and what both nnU-Net's own
`nnUNetPredictor.initialize_from_trained_model_folder` and our predictor load:

    <out_dir>/dataset.json
    <out_dir>/plans.json                  one `3d_fullres` configuration (PlainConvUNet)
    <out_dir>/fold_<f>/checkpoint_final.pth   {network_weights, init_args, trainer_name,
                                               inference_allowed_mirroring_axes, current_epoch}

The network is built from the plans by nnU-Net itself (`get_network_from_plans`, He init seeded by
`seed`), so the weights fit the plans by construction. Presets: `PAPER` is the final architecture of
the FLARE24 method paper (30,713,158 parameters with 1 input channel and 14 outputs); `SMALL` (and
`SMALL_COARSE`, the same at a coarser spacing) is a narrow network for CPU benchmarks; `TINY` is for fast tests.

CLI: `python -m testsupport.model_folder OUT_DIR --preset paper|small|small_coarse|tiny [--resampling torch|default]`.
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flare.labels import NUM_CLASSES, dataset_json_labels
from inference.files.atomic import atomic_output

TRAINER_NAME = "nnUNetTrainer"
CONFIGURATION = "3d_fullres"
PLANS_NAME = "nnUNetPlans"
NETWORK_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"

# Resampling as nnU-Net 2.8's planners write it into plans.json. "default" is
# ExperimentPlanner.determine_resampling / determine_segmentation_softmax_export_fn (skimage based);
# "torch" is what nnUNetPlannerResEncL_torchres writes (resample_torch_fornnunet). The paper swapped in
# torch resampling for export, so our predictor's plans name it.
RESAMPLING: dict[str, dict] = {
    "default": {
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                               "force_separate_z": None},
    },
    "torch": {
        "resampling_fn_data": "resample_torch_fornnunet",
        "resampling_fn_data_kwargs": {"is_seg": False, "force_separate_z": False,
                                      "memefficient_seg_resampling": False},
        "resampling_fn_seg": "resample_torch_fornnunet",
        "resampling_fn_seg_kwargs": {"is_seg": True, "force_separate_z": False,
                                     "memefficient_seg_resampling": False},
        "resampling_fn_probabilities": "resample_torch_fornnunet",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "force_separate_z": False,
                                               "memefficient_seg_resampling": False},
    },
}


@dataclass(frozen=True)
class Architecture:
    """A PlainConvUNet topology plus the plans fields that go with it. Axis order (z, y, x)."""
    features: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]           # target spacing in mm, (z, y, x)
    expected_parameters: int | None = None  # with 1 input channel and 14 outputs
    extra: dict = field(default_factory=dict)

    def kwargs(self) -> dict:
        """Keyword arguments for write_model_folder."""
        return dict(features=self.features, kernels=self.kernels, strides=self.strides,
                    patch_size=self.patch_size, spacing=self.spacing)


# The paper's final model (docs/flare.md section 5): nnU-Net's default planning for patch 40x192x224 at
# [2.5, 0.78, 0.78] mm.
PAPER = Architecture(
    features=(32, 64, 128, 256, 320, 320),
    kernels=((1, 3, 3),) + ((3, 3, 3),) * 5,
    strides=((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)),
    patch_size=(40, 192, 224),
    spacing=(2.5, 0.78, 0.78),
    expected_parameters=30_713_158,
)

# Same depth pattern and target spacing as the paper, 8x narrower: a CPU benchmark model.
SMALL = Architecture(
    features=(4, 8, 16, 32, 40, 40),
    kernels=PAPER.kernels,
    strides=PAPER.strides,
    patch_size=(40, 192, 224),
    spacing=(2.5, 0.78, 0.78),
)

# SMALL at a coarser target spacing (3.0 x 1.5 x 1.5 mm): 4.4x fewer voxels through the network for a
# 1.25 x 1.25 x 3.47 mm case, which is still resampled (down in z, up in-plane) and back, so that on a
# 2-core CPU the network does not drown the stages around it (benchmarks.studies.compare_nnunet's default).
SMALL_COARSE = Architecture(
    features=SMALL.features,
    kernels=PAPER.kernels,
    strides=PAPER.strides,
    patch_size=(40, 192, 224),
    spacing=(3.0, 1.5, 1.5),
)

# For unit tests: 3 stages, tiny patch, coarse spacing (a 40^3 volume runs in well under a second).
TINY = Architecture(
    features=(4, 8, 16),
    kernels=((1, 3, 3), (3, 3, 3), (3, 3, 3)),
    strides=((1, 1, 1), (1, 2, 2), (2, 2, 2)),
    patch_size=(16, 32, 32),
    spacing=(3.0, 1.5, 1.5),
)

PRESETS = {"paper": PAPER, "small": SMALL, "small_coarse": SMALL_COARSE, "tiny": TINY}


def _as_lists(seq: Sequence) -> list:
    return [list(s) if isinstance(s, (list, tuple)) else s for s in seq]


def make_dataset_json(num_input_channels: int = 1, num_classes: int = NUM_CLASSES,
                      channel_name: str = "MRI") -> dict:
    """dataset.json content. With 14 classes the labels are the FLARE organs (flare.labels)."""
    if num_classes == NUM_CLASSES:
        labels = dataset_json_labels()
    else:
        labels = {"background": 0, **{f"label_{i}": i for i in range(1, num_classes)}}
    channels = {str(i): (channel_name if num_input_channels == 1 else f"{channel_name}_{i}")
                for i in range(num_input_channels)}
    return {"channel_names": channels, "labels": labels, "numTraining": 0, "file_ending": ".nii.gz",
            "name": "random-weights benchmark model"}


def make_plans(*, features: Sequence[int], patch_size: Sequence[int], spacing: Sequence[float],
               kernels: Sequence[Sequence[int]], strides: Sequence[Sequence[int]],
               num_input_channels: int = 1, normalization: str = "ZScoreNormalization",
               resampling: str = "torch", n_conv_per_stage: int = 2, batch_size: int = 2,
               median_image_size: Sequence[int] | None = None,
               dataset_name: str = "Dataset999_Benchmark") -> dict:
    """plans.json content with one `3d_fullres` configuration, laid out as nnU-Net 2.8 writes it."""
    n = len(features)
    if not (len(kernels) == len(strides) == n):
        raise ValueError(f"features, kernels and strides must have the same length, got "
                         f"{len(features)}, {len(kernels)}, {len(strides)}")
    if len(patch_size) != 3 or len(spacing) != 3:
        raise ValueError(f"patch_size and spacing must have 3 entries (z, y, x), got {patch_size}, {spacing}")
    # The patch must be divisible by the total stride on every axis, as nnU-Net's planner guarantees.
    for ax in range(3):
        total = 1
        for s in strides:
            total *= s[ax]
        if patch_size[ax] % total:
            raise ValueError(f"patch_size {list(patch_size)} is not divisible by the total stride "
                             f"{total} on axis {ax}")
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {sorted(RESAMPLING)}, got {resampling!r}")
    median = list(median_image_size) if median_image_size is not None else [int(p) * 2 for p in patch_size]
    config = {
        "data_identifier": f"{PLANS_NAME}_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch_size,
        "patch_size": [int(p) for p in patch_size],
        "median_image_size_in_voxels": [float(m) for m in median],
        "spacing": [float(s) for s in spacing],
        "normalization_schemes": [normalization] * num_input_channels,
        "use_mask_for_norm": [False] * num_input_channels,
        **json.loads(json.dumps(RESAMPLING[resampling])),
        "architecture": {
            "network_class_name": NETWORK_CLASS,
            "arch_kwargs": {
                "n_stages": n,
                "features_per_stage": [int(f) for f in features],
                "conv_op": "torch.nn.modules.conv.Conv3d",
                "kernel_sizes": _as_lists(kernels),
                "strides": _as_lists(strides),
                "n_conv_per_stage": [n_conv_per_stage] * n,
                "n_conv_per_stage_decoder": [n_conv_per_stage] * (n - 1),
                "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": False,
    }
    # Intensity statistics are only used by CTNormalization; plausible MRI values keep it loadable.
    props = {"max": 2000.0, "mean": 400.0, "median": 380.0, "min": 0.0,
             "percentile_00_5": 5.0, "percentile_99_5": 1500.0, "std": 250.0}
    return {
        "dataset_name": dataset_name,
        "plans_name": PLANS_NAME,
        "original_median_spacing_after_transp": [float(s) for s in spacing],
        "original_median_shape_after_transp": [int(m) for m in median],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(c): dict(props)
                                                        for c in range(num_input_channels)},
    }


def build_network(plans: dict, num_input_channels: int, num_classes: int, seed: int = 0):
    """The PlainConvUNet that nnU-Net builds from `plans` (He-initialised with torch seed `seed`)."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans["configurations"][CONFIGURATION]["architecture"]
    torch.manual_seed(seed)
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"],
                                  arch["_kw_requires_import"], num_input_channels, num_classes,
                                  allow_init=True, deep_supervision=False)


def count_parameters(module) -> int:
    """Number of parameters of a torch module (all of them, trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def _write_json_atomic(path: Path, obj: dict) -> None:
    # 0644: model folders are read by other users (docker)
    with atomic_output(path, mode=0o644) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))


def write_model_folder(out_dir: str | os.PathLike, *, features: Sequence[int], patch_size: Sequence[int],
                       spacing: Sequence[float], kernels: Sequence[Sequence[int]],
                       strides: Sequence[Sequence[int]], num_input_channels: int = 1,
                       num_classes: int = NUM_CLASSES, normalization: str = "ZScoreNormalization",
                       seed: int = 0, folds: Sequence[int | str] = ("all",), resampling: str = "torch",
                       checkpoint_name: str = "checkpoint_final.pth",
                       mirroring_axes: Sequence[int] | None = (0, 1, 2),
                       median_image_size: Sequence[int] | None = None) -> Path:
    """Write a complete nnU-Net v2 trained-model folder with random weights; return its path.

    Arguments follow plans.json (axis order z, y, x): `features` per stage, conv `kernels` and
    `strides` per stage, `patch_size` in voxels, target `spacing` in mm. `resampling` is "torch"
    (resample_torch_fornnunet, as the paper's predictor) or "default" (nnU-Net's skimage-based
    default). Each fold gets its own weights (seed + fold index). Existing files are overwritten.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset_json = make_dataset_json(num_input_channels, num_classes)
    plans = make_plans(features=features, patch_size=patch_size, spacing=spacing, kernels=kernels,
                       strides=strides, num_input_channels=num_input_channels,
                       normalization=normalization, resampling=resampling,
                       median_image_size=median_image_size)
    _write_json_atomic(out / "dataset.json", dataset_json)
    _write_json_atomic(out / "plans.json", plans)
    for i, fold in enumerate(folds):
        net = build_network(plans, num_input_channels, num_classes, seed=seed + i)
        fold_value = fold if fold == "all" else int(fold)
        ckpt = {
            "network_weights": net.state_dict(),
            "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": fold_value,
                          "dataset_json": dataset_json, "device": torch.device("cpu")},
            "trainer_name": TRAINER_NAME,
            "inference_allowed_mirroring_axes": tuple(mirroring_axes) if mirroring_axes is not None else None,
            "current_epoch": 0,
        }
        fold_dir = out / f"fold_{fold_value}"
        fold_dir.mkdir(exist_ok=True)
        with atomic_output(fold_dir / checkpoint_name, mode=0o644) as tmp:
            torch.save(ckpt, tmp)
    return out


def write_preset(out_dir: str | os.PathLike, preset: str = "tiny", **overrides) -> Path:
    """write_model_folder with a named preset (paper, small, tiny); keyword overrides win."""
    try:
        arch = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}") from None
    return write_model_folder(out_dir, **{**arch.kwargs(), **overrides})


def model_parameter_count(model_dir: str | os.PathLike) -> int:
    """Parameters of the network that nnU-Net builds from a model folder's plans and dataset.json."""
    model_dir = Path(model_dir)
    plans = json.loads((model_dir / "plans.json").read_text())
    ds = json.loads((model_dir / "dataset.json").read_text())
    net = build_network(plans, len(ds["channel_names"]), len(ds["labels"]))
    return count_parameters(net)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m testsupport.model_folder", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="folder to write (created)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--resampling", choices=sorted(RESAMPLING), default="torch")
    p.add_argument("--folds", nargs="+", default=["all"], help="fold names: all or integers")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    out = write_preset(a.out_dir, a.preset, resampling=a.resampling, folds=a.folds, seed=a.seed)
    n = model_parameter_count(out)
    print(f"wrote {out} ({a.preset}, {n:,} parameters, resampling {a.resampling})")
    expected = PRESETS[a.preset].expected_parameters
    if expected is not None and n != expected:
        print(f"ERROR: expected {expected:,} parameters")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
