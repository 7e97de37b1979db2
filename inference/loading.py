"""Loading a trained nnU-Net v2 model folder into a `LoadedModel`: read the folder, choose the engine and
its settings, build the networks, load the folder's localiser.

Three steps, one function each: `read_model_folder` (inference.model.folder: dataset.json, plans.json),
`choose_engine` (inference.engines.choice: engine, device, precision, tiles per call) and the networks
(`_build_networks`: OpenVINO compiled models for the numpy engine, torch modules for the torch engine).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from inference import InferenceError
from inference.engines.choice import IR_BIN, IR_XML, EngineChoice, choose_engine, engine_for, fold_has_ir
from inference.model.folder import (DEFAULT_CHECKPOINT, DEFAULT_MODEL_DIR, LOCALIZER_DIR, Configuration,
                                    ModelFolder, available_folds, read_configuration, read_model_folder)
from inference.model.loaded import LoadedModel, NetworkPlan
from inference.model.manifest import start_verifying, verify_files

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelSpec:
    """A model folder and how to load it: load_model's arguments as one value (inference.api takes a
    loaded model or one of these)."""
    model_dir: str | os.PathLike = DEFAULT_MODEL_DIR
    folds: tuple[str, ...] | None = None
    checkpoint: str = DEFAULT_CHECKPOINT
    device: str = "auto"
    configuration: str | None = None
    backend: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    threads: int | None = None
    roi: bool = True

    def load(self) -> LoadedModel:
        return load_model(**{f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class FoldFacts:
    """What inference needs of a fold's checkpoint: its configuration name and TTA mirror axes."""
    configuration: str | None
    mirror_axes: tuple[int, ...] | None


def load_model(model_dir: str | os.PathLike = DEFAULT_MODEL_DIR, folds: list[str] | None = None,
               checkpoint: str = DEFAULT_CHECKPOINT, device: str | torch.device = "cpu",
               configuration: str | None = None, *, backend: str = "auto", precision: str = "auto",
               batch_size: int | None = None, threads: int | None = None, roi: bool = True,
               manifest_dir: str | os.PathLike | None = None, compile_at_load: bool = True) -> LoadedModel:
    """Load a trained nnU-Net v2 model folder onto `device`; several folds make an ensemble.

    `backend`, `precision` (inference.engines.choice) and `batch_size` (tiles per network call; None: the
    measured rule of inference.engines.choice.default_batch_size) choose how the network runs; `threads`
    caps OpenVINO's threads. `roi` False leaves the folder's localizer/ unloaded (whole-image prediction).
    `manifest_dir`: the folder whose manifest.json lists this one's files (default: this folder; a
    localiser's is its parent's). `compile_at_load` False: OpenVINO networks compile at their first use
    or `engine.prepare(model)` (the localiser's: most cases never run it).

    The files the load reads are checked against the manifest (inference.model.manifest): the checkpoint
    only where it is read (torch, or IR without the checkpoint's facts), the IR only where it runs.
    """
    folder = read_model_folder(Path(model_dir))
    root = Path(manifest_dir) if manifest_dir is not None else folder.path
    folds = [str(f) for f in folds] if folds else available_folds(folder.path, checkpoint)
    fold_dirs = [folder.path / f"fold_{f}" for f in folds]
    choice = choose_engine(backend, precision, device, all(fold_has_ir(d) for d in fold_dirs), folder.path)
    read = [folder.path / "dataset.json", folder.path / "plans.json", *_files_read(fold_dirs, checkpoint, choice)]
    checked = start_verifying(root, [_relative(p, root) for p in read])
    if choice.backend == "torch":
        checked()          # the checkpoints are unpickled next: refuse a changed one before
    try:
        built = _build_networks(folder, fold_dirs, checkpoint, configuration, choice, batch_size, threads,
                                verify=lambda path: verify_files(root, [_relative(path, root)]),
                                compile_at_load=compile_at_load)
    except InferenceError:
        checked()          # a changed file explains why it could not be read: say that first
        raise
    checked()
    localizer = None
    if roi and (folder.path / LOCALIZER_DIR).is_dir():
        # the localiser follows an explicit torch choice (an exact reference run stays all torch)
        localizer = load_localizer(folder.path, choice.device, backend="torch" if choice.backend == "torch" else "auto",
                                   precision=choice.precision, threads=threads)   # and the resolved precision
    plans = folder.plans
    return LoadedModel(
        model_dir=folder.path, networks=built.networks, config=built.config,
        transpose_forward=tuple(plans.get("transpose_forward", (0, 1, 2))),
        transpose_backward=tuple(plans.get("transpose_backward", (0, 1, 2))),
        channel_names=folder.channel_names, labels=folder.labels, file_ending=folder.file_ending,
        mirror_axes=built.facts.mirror_axes, folds=folds, device=choice.device, plan=built.plan,
        engine=engine_for(built.plan, choice.device), mind_params=folder.mind_params, localizer=localizer)


def _files_read(fold_dirs: list[Path], checkpoint: str, choice: EngineChoice) -> list[Path]:
    """The fold files this load reads for certain (for the manifest check): the IR on OpenVINO, the
    checkpoint on torch. OpenVINO reads a checkpoint only for IR without its facts (checked then)."""
    if choice.backend == "openvino":
        return [d / name for d in fold_dirs for name in (IR_XML, IR_BIN)]
    return [d / checkpoint for d in fold_dirs if (d / checkpoint).is_file()]


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


@dataclass
class _Built:
    networks: list
    facts: FoldFacts
    config: Configuration
    plan: NetworkPlan


def _build_networks(folder: ModelFolder, fold_dirs: list[Path], checkpoint: str, configuration: str | None,
                    choice: EngineChoice, batch_size: int | None, threads: int | None,
                    verify: Callable[[Path], None], compile_at_load: bool = True) -> _Built:
    """The folds' networks for the chosen engine, with the first fold's facts, the configuration and
    the full plan. The torch network is not built at all for OpenVINO: that saves start-up time.
    `verify(path)` checks a file the manifest check has not covered before it is read."""
    if choice.backend == "openvino":
        from inference.networks.openvino_network import OpenVINONetwork, read_ir
        irs = [read_ir(d / IR_XML) for d in fold_dirs]
        facts = _facts_from_ir(irs[0][1])
        if facts is None:      # IR written before it carried the checkpoint's facts
            verify(fold_dirs[0] / checkpoint)
            facts = _facts_from_checkpoint(fold_dirs[0] / checkpoint)
        config = _configuration(folder, configuration, facts, fold_dirs[0] / checkpoint)
        plan = choice.plan(batch_size, config.patch_size)
        networks = [OpenVINONetwork(d / IR_XML, plan.batch_size, plan.precision, threads, ir, compile_at_load)
                    for d, (ir, _) in zip(fold_dirs, irs)]
        return _Built(networks, facts, config, plan)
    from inference.model.checkpoint import load_checkpoint
    from inference.networks.torch_network import load_networks
    files = [d / checkpoint for d in fold_dirs]
    checkpoints = [load_checkpoint(f) for f in files]
    facts = _facts_of(checkpoints[0])
    config = _configuration(folder, configuration, facts, files[0])
    plan = choice.plan(batch_size, config.patch_size)
    networks = load_networks(files, checkpoints, config, len(folder.channel_names), len(folder.labels),
                             choice.device)
    return _Built(networks, facts, config, plan)


def _facts_of(checkpoint: dict) -> FoldFacts:
    mirror = checkpoint.get("inference_allowed_mirroring_axes")
    return FoldFacts(checkpoint.get("init_args", {}).get("configuration"),
                     tuple(mirror) if mirror is not None else None)


def _facts_from_ir(metadata: dict) -> FoldFacts | None:
    """The checkpoint facts an IR carries (inference.networks.openvino_network); None for older IR."""
    if "configuration" not in metadata or "mirror_axes" not in metadata:
        return None
    return _facts_of({"init_args": {"configuration": metadata["configuration"]},
                      "inference_allowed_mirroring_axes": metadata["mirror_axes"]})


def _facts_from_checkpoint(path: Path) -> FoldFacts:
    from inference.model.checkpoint import load_checkpoint
    return _facts_of(load_checkpoint(path))


def _configuration(folder: ModelFolder, requested: str | None, facts: FoldFacts, checkpoint: Path) -> Configuration:
    name = requested or facts.configuration
    if not name:
        raise InferenceError(f"{checkpoint}: names no configuration; pass one with --configuration")
    return read_configuration(folder, name)


def load_localizer(model_dir: Path, device, *, backend: str = "auto", precision: str = "auto",
                   batch_size: int | None = None, threads: int | None = None) -> LoadedModel:
    """The localiser of `model_dir` (its `localizer/` folder), checked against `model_dir`'s manifest
    (the manifest lives there, not in `localizer/`). Its OpenVINO networks compile when a case first
    needs them (inference.roi starts it), not at load: most cases do not."""
    return load_model(Path(model_dir) / LOCALIZER_DIR, None, DEFAULT_CHECKPOINT, device, backend=backend,
                      precision=precision, batch_size=batch_size, threads=threads, manifest_dir=model_dir,
                      compile_at_load=False)
