"""Load a standard nnU-Net v2 trained-model folder: dataset.json, plans.json, fold_<f>/<checkpoint>.pth.

The network is built from the plans' `architecture` entry through nnunetv2's own
`get_network_from_plans` (never re-implemented). Only that small nnunetv2 module is imported: its
PlansManager and predictor pull in the training stack, which would cost seconds of FLARE running time.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from inference import InferenceError
from inference.engines.choice import IR_BIN, IR_XML, NetworkPlan, choose_backend, choose_precision, \
    default_batch_size, fold_has_ir, native_bf16_evidence, openvino_installed, \
    precision_reason, require_torch_if_chosen
from inference.device import HOST_CPU, device_type, resolve_device
from inference.model.manifest import verify_files

if TYPE_CHECKING:
    import torch

DEFAULT_CHECKPOINT = "checkpoint_final.pth"
# Prefixes a state dict carries when saved from a torch.compile'd or DataParallel-wrapped network.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


@dataclass
class Configuration:
    """The parts of one plans configuration that inference needs (axes already in transposed order)."""
    name: str
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    normalization_schemes: list[str]
    use_mask_for_norm: list[bool]
    intensity_properties: dict[str, dict]
    data_force_separate_z: bool | None
    logits_force_separate_z: bool | None
    architecture: dict


@dataclass
class LoadedModel:
    """Everything needed to segment: one network per fold, the configuration and the labels.

    `networks` are torch modules with the torch backend, compiled OpenVINO models with the OpenVINO one
    (both map a (B, C, *patch) tensor to (B, K, *patch) logits); `plan` says which, in which precision.
    """
    model_dir: Path
    networks: list
    config: Configuration
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    channel_names: list[str]
    labels: dict[str, int]
    file_ending: str
    mirror_axes: tuple[int, ...] | None
    folds: list[str]
    device: torch.device
    mind_params: dict | None = None   # set for models on MIND-SSC descriptors (inference.mind)
    localizer: "LoadedModel | None" = None   # coarse model of localizer/ (inference/roi.py)
    plan: NetworkPlan = NetworkPlan("torch", "fp32", 1)

    @property
    def num_channels(self) -> int:
        """Channels the network takes."""
        return len(self.channel_names)

    @property
    def num_input_files(self) -> int:
        """Files per case: one image for a MIND model (its 12 descriptor channels are computed here)."""
        return 1 if self.mind_params is not None else self.num_channels

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InferenceError(f"{path}: missing; a nnU-Net model folder needs dataset.json, plans.json and "
                             f"fold_<f>/<checkpoint>.pth")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InferenceError(f"{path}: not valid JSON ({e})") from None


def resolve_configuration(plans: dict, name: str, plans_path: Path) -> dict:
    """A plans configuration with `inherits_from` chains merged, as nnU-Net resolves them."""
    configurations = plans.get("configurations", {})
    chain, current = [], name
    while current is not None:
        if current not in configurations:
            raise InferenceError(f"{plans_path}: configuration '{current}' not found; available: "
                                 f"{sorted(configurations)}")
        if current in chain:
            raise InferenceError(f"{plans_path}: circular 'inherits_from' chain {chain + [current]}")
        chain.append(current)
        current = configurations[current].get("inherits_from")
    merged: dict = {}
    for link in reversed(chain):
        merged.update(configurations[link])
    return merged


def _force_separate_z(config: dict, key: str) -> bool | None:
    return config.get(key, {}).get("force_separate_z")


def parse_labels(dataset_json: dict, path: Path) -> dict[str, int]:
    """Label name -> value for plain label maps; region-based and non-consecutive labels are refused."""
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InferenceError(f"{path}: no 'labels' entry")
    plain = {k: v for k, v in labels.items() if k != "ignore"}
    if any(isinstance(v, (list, tuple)) for v in plain.values()):
        raise InferenceError(f"{path}: region-based models (labels with lists of values) are not supported "
                             f"by this predictor; use nnU-Net's own predictor for them")
    values = sorted(int(v) for v in plain.values())
    if values != list(range(len(values))):
        raise InferenceError(f"{path}: labels must be consecutive integers from 0, got {values}")
    return {k: int(v) for k, v in sorted(plain.items(), key=lambda kv: int(kv[1]))}


def _mind_params(dataset_json: dict, path: Path) -> dict | None:
    """MIND descriptor parameters when dataset.json declares MIND input (see inference/mind.py)."""
    if "mind" not in dataset_json and not any(str(n).startswith("MIND_")
                                              for n in dataset_json.get("channel_names", {}).values()):
        return None
    # imported only for MIND models: keeps start-up light for plain models (and torch-free)
    from inference.mind_definition import descriptor_channels_from_dataset_json
    try:
        return descriptor_channels_from_dataset_json(dataset_json)
    except ValueError as e:
        raise InferenceError(f"{path}: {e}") from None


def available_folds(model_dir: Path, checkpoint: str) -> list[str]:
    folds = sorted(p.name[len("fold_"):] for p in model_dir.glob("fold_*")
                   if (p / checkpoint).is_file())
    if not folds:
        raise InferenceError(f"{model_dir}: no fold_<f>/{checkpoint} found")
    return folds


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


def build_network(architecture: dict, num_channels: int, num_classes: int) -> torch.nn.Module:
    # Imported here: only needed once per process, and it keeps `import inference.model.loading` light.
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    return get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                  architecture.get("_kw_requires_import", ()), num_channels, num_classes,
                                  allow_init=False, deep_supervision=False)


def load_model(model_dir: str | os.PathLike, folds: list[str] | None = None,
               checkpoint: str = DEFAULT_CHECKPOINT, device: str | torch.device = "cpu",
               configuration: str | None = None, *, backend: str = "auto", precision: str = "auto",
               batch_size: int | None = None, threads: int | None = None, roi: bool = True) -> LoadedModel:
    """Load a trained nnU-Net v2 model folder onto `device`; several folds make an ensemble.

    `backend`, `precision` (inference.engines.choice) and `batch_size` (tiles per network call; None: the
    measured rule of inference.engines.choice.default_batch_size) choose how the network runs; `threads` caps
    OpenVINO's threads (torch's are set process-wide with torch.set_num_threads). `roi` False leaves the
    folder's localizer/ unloaded (whole-image prediction).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InferenceError(f"{model_dir}: model folder not found")
    dataset_json = _read_json(model_dir / "dataset.json")
    plans_path = model_dir / "plans.json"
    plans = _read_json(plans_path)
    labels = parse_labels(dataset_json, model_dir / "dataset.json")
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise InferenceError(f"{model_dir / 'dataset.json'}: no 'channel_names' entry")
    channel_names = [channels[k] for k in sorted(channels, key=int)]
    mind_params = _mind_params(dataset_json, model_dir / "dataset.json")

    folds = [str(f) for f in folds] if folds else available_folds(model_dir, checkpoint)
    kind = device_type(device)   # without importing torch where no GPU can be there
    engine = choose_backend(backend, kind, all(fold_has_ir(model_dir / f"fold_{f}") for f in folds),
                            openvino_installed())
    require_torch_if_chosen(engine, backend, model_dir)   # the torch-free CPU image: say how to convert
    # The OpenVINO path runs on the host CPU without torch (inference.engines.numpy_engine.pipeline); everything else is torch's.
    device = HOST_CPU if engine == "openvino" else resolve_device(device)
    cuda_bf16 = kind == "cuda" and precision == "bf16" and _torch().cuda.is_bf16_supported()
    bf16_evidence = native_bf16_evidence() if kind == "cpu" and precision in ("auto", "bf16") else None
    requested_precision = precision
    precision = choose_precision(precision, kind, bf16_evidence is not None, cuda_bf16, engine)
    checked = [f"fold_{f}/{checkpoint}" for f in folds if (model_dir / f"fold_{f}" / checkpoint).is_file()]
    if engine == "openvino":
        checked += [f"fold_{f}/{name}" for f in folds for name in (IR_XML, IR_BIN)]
    verify_files(model_dir, ["dataset.json", "plans.json"] + checked)
    irs = checkpoints = None
    if engine == "openvino":
        from inference.networks.openvino_network import read_ir
        irs = [read_ir(model_dir / f"fold_{f}" / IR_XML) for f in folds]
        facts = [metadata for _, metadata in irs]
    if irs is not None and all("configuration" in f and "mirror_axes" in f for f in facts):
        # the IR carries the checkpoint facts: no torch.load (inference.networks.openvino_network)
        first = {"init_args": {"configuration": facts[0]["configuration"]},
                 "inference_allowed_mirroring_axes": facts[0]["mirror_axes"]}
    else:
        checkpoints = [load_checkpoint(model_dir / f"fold_{f}" / checkpoint) for f in folds]
        first = checkpoints[0]
    config_name = configuration or first.get("init_args", {}).get("configuration")
    if not config_name:
        raise InferenceError(f"{model_dir / f'fold_{folds[0]}' / checkpoint}: names no configuration; "
                             f"pass one with --configuration")
    raw = resolve_configuration(plans, config_name, plans_path)
    if raw.get("previous_stage"):
        raise InferenceError(f"{plans_path}: configuration '{config_name}' is a cascade stage; "
                             f"cascades are not supported by this predictor")
    for key in ("patch_size", "spacing", "architecture", "normalization_schemes"):
        if key not in raw:
            raise InferenceError(f"{plans_path}: configuration '{config_name}' has no '{key}'")
    if len(raw["patch_size"]) != 3:
        raise InferenceError(f"{plans_path}: configuration '{config_name}' is not 3D; only 3D models are "
                             f"supported")
    config = Configuration(
        name=config_name,
        patch_size=tuple(int(p) for p in raw["patch_size"]),
        spacing=tuple(float(s) for s in raw["spacing"]),
        normalization_schemes=list(raw["normalization_schemes"]),
        use_mask_for_norm=list(raw.get("use_mask_for_norm", [False] * len(channel_names))),
        intensity_properties=plans.get("foreground_intensity_properties_per_channel", {}),
        data_force_separate_z=_force_separate_z(raw, "resampling_fn_data_kwargs"),
        logits_force_separate_z=_force_separate_z(raw, "resampling_fn_probabilities_kwargs"),
        architecture=raw["architecture"],
    )
    if len(config.normalization_schemes) != len(channel_names):
        raise InferenceError(f"{plans_path}: {len(config.normalization_schemes)} normalization schemes for "
                             f"{len(channel_names)} input channels in dataset.json")

    if batch_size is not None and batch_size < 1:
        raise InferenceError(f"batch size must be >= 1, got {batch_size}")
    plan = NetworkPlan(engine, precision, batch_size or default_batch_size(engine, device.type, config.patch_size),
                       precision_reason(requested_precision, precision, kind, bf16_evidence, engine))
    if engine == "openvino":  # the torch network is not built at all: that saves start-up time
        from inference.networks.openvino_network import OpenVINONetwork
        networks = [OpenVINONetwork(model_dir / f"fold_{f}" / IR_XML, plan.batch_size, precision, threads, ir)
                    for f, (ir, _) in zip(folds, irs)]
    else:
        if checkpoints is None:
            checkpoints = [load_checkpoint(model_dir / f"fold_{f}" / checkpoint) for f in folds]
        networks = _torch_networks(model_dir, folds, checkpoint, checkpoints, config, len(channel_names),
                                   len(labels), device)

    mirror = first.get("inference_allowed_mirroring_axes")
    localizer = None
    if roi and (model_dir / "localizer").is_dir():   # ROI-first prediction (inference/roi.py)
        from inference.roi import load_localizer
        # the localiser follows an explicit torch choice (an exact reference run stays all torch)
        localizer = load_localizer(model_dir, device, backend="torch" if engine == "torch" else "auto",
                                   precision=precision, threads=threads)   # and the resolved precision
    return LoadedModel(
        model_dir=model_dir, networks=networks, config=config,
        transpose_forward=tuple(plans.get("transpose_forward", (0, 1, 2))),
        transpose_backward=tuple(plans.get("transpose_backward", (0, 1, 2))),
        channel_names=channel_names, labels=labels,
        file_ending=dataset_json.get("file_ending", ".nii.gz"),
        mirror_axes=tuple(mirror) if mirror is not None else None,
        folds=folds, device=device, mind_params=mind_params, localizer=localizer, plan=plan,
    )


def _torch():
    import torch
    return torch


def _torch_networks(model_dir: Path, folds: list[str], checkpoint: str, checkpoints: list[dict],
                    config: Configuration, num_channels: int, num_classes: int,
                    device: torch.device) -> list[torch.nn.Module]:
    networks = []
    for fold, ckpt in zip(folds, checkpoints):  # build_network imports torch
        network = build_network(config.architecture, num_channels, num_classes)
        try:
            network.load_state_dict(strip_wrapper_prefixes(ckpt["network_weights"]))
        except RuntimeError as e:
            raise InferenceError(f"{model_dir / f'fold_{fold}' / checkpoint}: weights do not fit the network "
                                 f"built from plans.json and dataset.json ({num_classes} labels, "
                                 f"{num_channels} channels): {str(e).splitlines()[0]}") from None
        networks.append(network.to(device).eval())
    return networks
