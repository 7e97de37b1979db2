"""Import a trained nnU-Net v2 model folder into place (default: weights/), validated and stripped.

    python -m inference.weights import SRC_MODEL_DIR [-o weights/] [--folds 0 1 ...] [--half] [--overwrite]
                                        [--localizer LOCALIZER_MODEL_DIR]
    python -m inference.weights ir MODEL_DIR [--folds ...]     (add OpenVINO IR to a folder in place,
                                                                 and to its localizer/ if it has one)

The source is loaded the way the predictor loads it (weights-only unpickling, network built from the
plans, strict state-dict match, label count checked against dataset.json). What is written holds only
what inference needs: dataset.json, plans.json and per fold a checkpoint with the network weights
(optionally fp16), the configuration name, trainer name and allowed mirroring axes, and, when openvino
is installed, the fold's network as OpenVINO IR (fold_<f>/network.xml + .bin, float32, fixed tile shape,
any batch) for the CPU backend (the localizer's folds too). Optimizer state,
logs and other training state are dropped. A manifest.json with the sha256 of every file lets the
predictor refuse a file changed afterwards. With --localizer, a second (coarse) model folder is
validated the same way and written to <dest>/localizer/ (see inference/roi.py); the one manifest covers
both. Without it, a localizer/ the source carries is imported too. The destination is replaced only when the new folder is
complete (written beside it, then renamed).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from inference import InferenceError
from inference.files.atomic import atomic_output
from inference.engines.choice import IR_BIN, IR_XML, openvino_installed
from inference.model.manifest import MANIFEST_NAME, add_to_manifest, write_manifest
from inference.model.checkpoint import load_checkpoint, strip_wrapper_prefixes
from inference.model.folder import DEFAULT_CHECKPOINT, LOCALIZER_DIR, available_folds
from inference.loading import load_localizer, load_model

DEFAULT_DEST = Path(__file__).resolve().parent.parent / "weights"


def _compact_copies(weights: dict, half: bool) -> dict:
    """Own, dense copies of the tensors (fp16 if `half`) that keep the source's aliasing.

    dynamic_network_architectures registers every convolution twice (`...conv.weight` and
    `...all_modules.0.weight` are one parameter); torch.save writes a shared storage once, so copying
    each key separately would double the file.
    """
    copies, out = {}, {}
    for k, v in weights.items():
        alias = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.dtype)
        if alias not in copies:
            c = v.half() if half and v.is_floating_point() else v
            copies[alias] = c.contiguous().clone()
        out[k] = copies[alias]
    return out


def _stripped_checkpoint(source: dict, half: bool) -> dict:
    weights = strip_wrapper_prefixes(source["network_weights"])
    mirror = source.get("inference_allowed_mirroring_axes")
    return {
        "network_weights": _compact_copies(weights, half),
        "init_args": {"configuration": source.get("init_args", {}).get("configuration")},
        "trainer_name": source.get("trainer_name", "nnUNetTrainer"),
        "inference_allowed_mirroring_axes": tuple(int(a) for a in mirror) if mirror is not None else None,
    }


def _write_stripped(source_dir: Path, target: Path, folds: list[str], checkpoint: str, half: bool,
                    configuration: str) -> None:
    target.mkdir(exist_ok=True)
    # through atomic_output: a full disk or an I/O error is a WriteError naming the file, never a short copy
    for name in ("dataset.json", "plans.json"):
        with atomic_output(target / name) as tmp:
            shutil.copyfile(source_dir / name, tmp)
    for fold in folds:
        src = load_checkpoint(source_dir / f"fold_{fold}" / checkpoint)
        stripped = _stripped_checkpoint(src, half)
        stripped["init_args"]["configuration"] = configuration
        with atomic_output(target / f"fold_{fold}" / DEFAULT_CHECKPOINT) as tmp:
            torch.save(stripped, tmp)


def _validated_localizer(localizer_dir: Path, model, checkpoint: str):
    """(folds, checkpoint name, loaded localiser) after checking it can serve `model`: same input files
    per case. Its checkpoint is `checkpoint` if it has one by that name, else the default name (an
    imported localizer carries checkpoint_final.pth)."""
    if not localizer_dir.is_dir():
        raise InferenceError(f"{localizer_dir}: localizer model folder not found")
    if not any(localizer_dir.glob(f"fold_*/{checkpoint}")):
        checkpoint = DEFAULT_CHECKPOINT
    folds = available_folds(localizer_dir, checkpoint)
    loc = load_model(localizer_dir, folds, checkpoint, "cpu", backend="torch")  # the checkpoint is what is copied
    if loc.num_input_files != model.num_input_files:
        raise InferenceError(f"{localizer_dir}: the localizer takes {loc.num_input_files} image(s) per case, "
                             f"the model {model.num_input_files}; it must read the same input files")
    if (localizer_dir / LOCALIZER_DIR).is_dir():
        raise InferenceError(f"{localizer_dir}: a localizer cannot carry a localizer of its own")
    return folds, checkpoint, loc


def ir_metadata(model) -> dict:
    """What the OpenVINO path needs from a fold's checkpoint, stored in its IR (so it never loads torch)."""
    return {"configuration": model.config.name,
            "mirror_axes": list(model.mirror_axes) if model.mirror_axes is not None else None}


def _require_openvino() -> None:
    if not openvino_installed():
        raise InferenceError("OpenVINO IR needs the openvino package (pip install openvino)")


def _convert_folds(model, model_dir: Path) -> list[str]:
    """Convert each fold network of `model` (loaded from `model_dir` on torch) to OpenVINO IR beside its
    checkpoint; return the written paths (relative to `model_dir`). Each file appears whole or not at
    all (written under a temporary name)."""
    from inference.networks.openvino_network import convert_to_ir
    written = []
    for fold, network in zip(model.folds, model.networks):
        fold_dir = model_dir / f"fold_{fold}"
        staging = Path(tempfile.mkdtemp(prefix=".ir-", dir=fold_dir))
        try:
            convert_to_ir(network, model.num_channels, model.config.patch_size, staging / IR_XML,
                          ir_metadata(model))
            for name in (IR_BIN, IR_XML):  # the .xml last: a folder counts as having IR once it is there
                (staging / name).chmod(0o644)
                (staging / name).replace(fold_dir / name)
                written.append(f"fold_{fold}/{name}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(written)


def write_ir(model_dir: Path, folds: list[str] | None = None, checkpoint: str = DEFAULT_CHECKPOINT) -> list[str]:
    """Write OpenVINO IR for each fold of the model folder `model_dir` (not its localizer/); return the
    written paths, relative to `model_dir`."""
    _require_openvino()
    return _convert_folds(load_model(model_dir, folds, checkpoint, "cpu", backend="torch"), Path(model_dir))


def write_localizer_ir(model_dir: Path) -> list[str]:
    """Write OpenVINO IR for each fold of `model_dir/localizer/`, loaded as the predictor loads it (its
    files checked against `model_dir`'s manifest, if any); return the written paths, relative to
    `model_dir`."""
    _require_openvino()
    loc = load_localizer(model_dir, "cpu", backend="torch")
    return [f"{LOCALIZER_DIR}/{p}" for p in _convert_folds(loc, Path(model_dir) / LOCALIZER_DIR)]


def add_ir(model_dir: str | Path, folds: list[str] | None = None, checkpoint: str = DEFAULT_CHECKPOINT) -> list[str]:
    """Add OpenVINO IR to an existing model folder and to its localizer/ (if it has one), and to its
    manifest when it has one. `folds` and `checkpoint` select the model's folds; the localizer's are
    all of its folds, by the predictor's checkpoint name."""
    model_dir = Path(model_dir)
    manifest = (model_dir / MANIFEST_NAME).is_file()
    written = []
    # The localizer first, with its manifest entries: loading the model to convert it loads the localizer
    # too, which then checks (and compiles) the IR just written.
    if (model_dir / LOCALIZER_DIR).is_dir():
        written = write_localizer_ir(model_dir)
        if manifest:
            add_to_manifest(model_dir, written)
    model_written = write_ir(model_dir, folds, checkpoint)
    if manifest:
        add_to_manifest(model_dir, model_written)
    return sorted(written + model_written)


def import_model(source_dir: str | Path, dest: str | Path = DEFAULT_DEST, folds: list[str] | None = None,
                 checkpoint: str = DEFAULT_CHECKPOINT, half: bool = False, overwrite: bool = False,
                 localizer: str | Path | None = None, source_label: str | None = None,
                 ir: bool | None = None) -> Path:
    """Validate `source_dir` (and `localizer`, a model folder), write a stripped copy with a manifest to
    `dest` (the localizer as `dest/localizer/`); return `dest`. `source_label`: what the manifest names
    as the source (default: the source folder). `ir`: also write OpenVINO IR per fold of the model and
    of the localizer (None: when openvino is installed)."""
    source_dir, dest = Path(source_dir), Path(dest)
    if source_dir.resolve() == dest.resolve():
        raise InferenceError(f"{dest}: source and destination are the same folder")
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise InferenceError(f"{dest}: not empty; pass --overwrite to replace it")
    folds = [str(f) for f in folds] if folds else available_folds(source_dir, checkpoint)
    # Validation = loading it exactly as the predictor will (raises InferenceError with the file named).
    model = load_model(source_dir, folds, checkpoint, "cpu", backend="torch")
    if localizer is None and (source_dir / LOCALIZER_DIR).is_dir():
        localizer = source_dir / LOCALIZER_DIR
    loc_info = None
    if localizer is not None:
        localizer = Path(localizer)
        loc_folds, loc_ckpt, loc = _validated_localizer(localizer, model, checkpoint)
    ir = openvino_installed() if ir is None else ir

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.import-", dir=dest.parent))
    try:
        _write_stripped(source_dir, staging, folds, checkpoint, half, model.config.name)
        if ir:
            write_ir(staging, folds)
        if localizer is not None:
            _write_stripped(localizer, staging / LOCALIZER_DIR, loc_folds, loc_ckpt, half, loc.config.name)
            if ir:
                write_localizer_ir(staging)
            loc_info = {"source": str(localizer.resolve()), "folds": loc_folds, "configuration": loc.config.name,
                        "spacing": list(loc.config.spacing), "labels": loc.labels, "openvino_ir": bool(ir)}
        write_manifest(staging, {"source": source_label or str(source_dir.resolve()), "folds": folds,
                                 "configuration": model.config.name, "half": half,
                                 "checkpoint": DEFAULT_CHECKPOINT, "openvino_ir": bool(ir),
                                 **({"localizer": loc_info} if loc_info else {})})
        load_model(staging, folds, DEFAULT_CHECKPOINT, "cpu", backend="torch")  # the copy loads too (with its localizer)
        if ir:
            load_model(staging, folds, DEFAULT_CHECKPOINT, "cpu", backend="openvino")
        for p in staging.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        staging.chmod(0o755)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{staging.name}")
            dest.rename(old)
            staging.rename(dest)
            shutil.rmtree(old)
        else:
            staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference.weights",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="validate a trained nnU-Net model folder and copy it into place")
    imp.add_argument("source", type=Path, help="trained model folder (dataset.json, plans.json, fold_*/)")
    imp.add_argument("-o", "--output", dest="dest", type=Path, default=DEFAULT_DEST,
                     help=f"model folder to write (default {DEFAULT_DEST})")
    imp.add_argument("--folds", nargs="+", default=None, help="folds to import (default: all found)")
    imp.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint name in the source folds")
    imp.add_argument("--half", action="store_true", help="store weights in fp16 (half the size)")
    imp.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    imp.add_argument("--localizer", type=Path, default=None,
                     help="a coarse nnU-Net model folder to import as <output>/localizer/: the predictor runs it "
                          "first and the model only inside the box it finds (docs/roi.md)")
    imp.add_argument("--no-ir", action="store_true",
                     help="do not write OpenVINO IR (written by default when openvino is installed)")
    add = sub.add_parser("ir", help="add OpenVINO IR to a model folder and its localizer/ in place (and to its "
                                    "manifest)")
    add.add_argument("model", type=Path, help="model folder (dataset.json, plans.json, fold_*/)")
    add.add_argument("--folds", nargs="+", default=None,
                     help="the model's folds to convert (default: all found; a localizer's are all converted)")
    add.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint name in the folds")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "ir":
            written = add_ir(args.model, args.folds, args.checkpoint)
            print(f"wrote {' '.join(written)} in {args.model}")
            return 0
        dest = import_model(args.source, args.dest, args.folds, args.checkpoint, args.half, args.overwrite,
                            localizer=args.localizer, ir=False if args.no_ir else None)
    except InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    manifest = json.loads((dest / "manifest.json").read_text())
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    loc = manifest.get("localizer")
    print(f"imported {args.source} -> {dest}: folds {' '.join(manifest['folds'])}, configuration "
          f"{manifest['configuration']}, {len(manifest['files'])} files, {size / 1e6:.1f} MB"
          + (f"; localizer {loc['source']} at {loc['spacing']} mm" if loc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
