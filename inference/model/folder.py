"""Reading a standard nnU-Net v2 trained-model folder: dataset.json, plans.json and the configuration a
checkpoint names, checked and turned into plain records. No torch, no nnunetv2."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from inference import InferenceError

# The default model: weights/ beside this package, in nnU-Net's trained-model-folder layout.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent.parent / "weights"
DEFAULT_CHECKPOINT = "checkpoint_final.pth"
LOCALIZER_DIR = "localizer"   # a model folder's optional coarse localiser (inference.roi)


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
class ModelFolder:
    """What dataset.json and plans.json say, read and checked once."""
    path: Path
    plans: dict
    labels: dict[str, int]
    channel_names: list[str]
    file_ending: str
    mind_params: dict | None

    @property
    def plans_path(self) -> Path:
        return self.path / "plans.json"


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise InferenceError(f"{path}: missing; a nnU-Net model folder needs dataset.json, plans.json and "
                             f"fold_<f>/<checkpoint>.pth")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InferenceError(f"{path}: not valid JSON ({e})") from None


def read_model_folder(model_dir: Path) -> ModelFolder:
    """dataset.json and plans.json of `model_dir`, with labels and channels checked."""
    if not model_dir.is_dir():
        raise InferenceError(f"{model_dir}: model folder not found")
    dataset_path = model_dir / "dataset.json"
    dataset_json = read_json(dataset_path)
    plans = read_json(model_dir / "plans.json")
    labels = parse_labels(dataset_json, dataset_path)
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise InferenceError(f"{dataset_path}: no 'channel_names' entry")
    return ModelFolder(path=model_dir, plans=plans, labels=labels,
                       channel_names=[channels[k] for k in sorted(channels, key=int)],
                       file_ending=dataset_json.get("file_ending", ".nii.gz"),
                       mind_params=_mind_params(dataset_json, dataset_path))


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


def read_configuration(folder: ModelFolder, name: str) -> Configuration:
    """The configuration `name` of the folder's plans, checked: 3D, not a cascade stage, complete."""
    plans_path = folder.plans_path
    raw = resolve_configuration(folder.plans, name, plans_path)
    if raw.get("previous_stage"):
        raise InferenceError(f"{plans_path}: configuration '{name}' is a cascade stage; "
                             f"cascades are not supported by this predictor")
    for key in ("patch_size", "spacing", "architecture", "normalization_schemes"):
        if key not in raw:
            raise InferenceError(f"{plans_path}: configuration '{name}' has no '{key}'")
    if len(raw["patch_size"]) != 3:
        raise InferenceError(f"{plans_path}: configuration '{name}' is not 3D; only 3D models are supported")
    channels = len(folder.channel_names)
    config = Configuration(
        name=name,
        patch_size=tuple(int(p) for p in raw["patch_size"]),
        spacing=tuple(float(s) for s in raw["spacing"]),
        normalization_schemes=list(raw["normalization_schemes"]),
        use_mask_for_norm=list(raw.get("use_mask_for_norm", [False] * channels)),
        intensity_properties=folder.plans.get("foreground_intensity_properties_per_channel", {}),
        data_force_separate_z=_force_separate_z(raw, "resampling_fn_data_kwargs"),
        logits_force_separate_z=_force_separate_z(raw, "resampling_fn_probabilities_kwargs"),
        architecture=raw["architecture"],
    )
    if len(config.normalization_schemes) != channels:
        raise InferenceError(f"{plans_path}: {len(config.normalization_schemes)} normalization schemes for "
                             f"{channels} input channels in dataset.json")
    return config
