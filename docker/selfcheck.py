"""Build-time check of the image's runtime venv (run by the Dockerfile from /workspace).

Fails the build, with a message saying what to do, when the predictor cannot run: predict.sh,
inference/ or weights/ missing, a module the predictor imports missing from the slimmed venv, or a
model that cannot be loaded. With torch (the CUDA image) it loads the model in weights/ on the CPU,
builds its network through nnunetv2 and runs one forward pass on a small zero input, and where OpenVINO
is installed too compares the two on one tile. Without torch (the CPU image) the model must carry its
OpenVINO IR (else: `python -m inference.weights ir weights` before the build); it is loaded as the
predictor loads it, run on one tile, and the check fails if anything imported torch. Either way a
library that was left out or pruned shows up here and not at the organisers'.

Usage (inside the builder stage): python -B docker/selfcheck.py [WORKSPACE]
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path


def fail(message: str) -> None:
    print(f"selfcheck: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", nargs="?", default="/workspace", type=Path,
                        help="folder holding predict.sh, inference/ and weights/ (default /workspace)")
    args = parser.parse_args()
    workspace = args.workspace
    for name, kind in (("predict.sh", "file"), ("inference", "dir"), ("weights", "dir")):
        path = workspace / name
        if not (path.is_file() if kind == "file" else path.is_dir()):
            fail(f"{path} missing: the image needs predict.sh, the predictor in inference/ and the "
                 f"default nnU-Net model folder in weights/ (dataset.json, plans.json, fold_*/)")
    sys.path.insert(0, str(workspace))

    if importlib.util.find_spec("torch") is None:
        check_torch_free(workspace / "weights")
    else:
        check_with_torch(workspace / "weights")


def import_or_fail(modules) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            fail(f"import {module}: {e}. Add the missing package to docker/requirements.txt or pass "
                 f"--build-arg EXTRA_PIP='<package>'")


def check_mask_for_norm(model) -> None:
    if any(model.config.use_mask_for_norm):
        try:
            importlib.import_module("scipy.ndimage")
        except ImportError:
            fail("the model normalises inside a foreground mask (use_mask_for_norm), which needs scipy: "
                 "pass --build-arg EXTRA_PIP=scipy")


def check_torch_free(model_dir: Path) -> None:
    """The CPU image: numpy + OpenVINO run the IR; torch must never be imported."""
    import_or_fail(("inference.cli", "inference.api", "inference.files", "inference.loading",
                    "inference.engines.numpy_engine.engine", "inference.engines.numpy_engine.mind",
                    "SimpleITK", "numpy", "openvino"))
    import numpy as np

    from inference import InferenceError
    from inference.engines.choice import fold_has_ir
    from inference.loading import load_model
    missing = [p.parent.relative_to(model_dir.parent) for p in sorted(model_dir.glob("**/fold_*/checkpoint_final.pth"))
               if not fold_has_ir(p.parent)]
    if missing:
        fail(f"{', '.join(map(str, missing))}: no OpenVINO IR, and this image has no torch to run the checkpoint. "
             f"Convert the model before the build: python -m inference.weights ir weights")
    from inference.networks.openvino_network import compile_cache_dir
    cache = compile_cache_dir(create=True)   # where FLARE_OPENVINO_CACHE is set: filled by this load
    try:
        model = load_model(model_dir, device="cpu")
        compiled = [n.compiled for m in (model, model.localizer) if m is not None for n in m.networks]
    except InferenceError as e:
        fail(f"loading {model_dir}: {e}")
    check_mask_for_norm(model)
    tile = np.random.default_rng(0).normal(size=(1, model.num_channels, *model.config.patch_size)).astype(np.float32)
    out = model.networks[0](tile)
    if out.shape != (1, model.num_classes, *model.config.patch_size) or not np.isfinite(out).all():
        fail(f"OpenVINO forward pass on one tile gave shape {out.shape} (finite: {bool(np.isfinite(out).all())})")
    if "torch" in sys.modules:
        fail("the torch-free image imported torch while loading and running the model")
    import openvino as ov
    mind = ", MIND input" if model.mind_params is not None else ""
    print(f"selfcheck: ok: no torch, OpenVINO {ov.get_version().split('-')[0]} ({model.plan.describe()} here), "
          f"model {model.config.name} (folds {' '.join(model.folds)}, {model.num_classes} classes{mind}), "
          f"forward on one {list(model.config.patch_size)} tile"
          + (f"; compile cache of {len(compiled)} networks for this CPU in {cache}" if cache else ""))


def check_with_torch(model_dir: Path) -> None:
    # Everything the CLI imports on its hot path, plus the network builder it imports lazily.
    import_or_fail(("inference.cli", "inference.api", "inference.files", "inference.loading",
                    "nnunetv2.utilities.get_network_from_plans", "SimpleITK", "numpy", "torch"))

    import torch

    from inference.loading import load_model

    try:
        model = load_model(model_dir, device="cpu", backend="torch")
    except Exception as e:  # noqa: BLE001 - InferenceError for a bad folder; anything else is a broken venv
        fail(f"loading {model_dir}: {type(e).__name__}: {e}")
    check_mask_for_norm(model)

    # A small input every stage can downsample: twice the product of the strides per axis (instance
    # norm needs more than one voxel at the bottleneck).
    strides = model.config.architecture["arch_kwargs"]["strides"]
    shape = [1, model.num_channels]
    for axis in range(3):
        size = 2
        for stride in strides:
            size *= int(stride[axis]) if isinstance(stride, (list, tuple)) else int(stride)
        shape.append(size)
    with torch.no_grad():
        out = model.networks[0](torch.zeros(shape))
    if tuple(out.shape) != (1, model.num_classes, *shape[2:]):
        fail(f"forward pass on {shape} gave shape {tuple(out.shape)}")
    mind = getattr(model, "mind_params", None) is not None
    engines = check_openvino(model_dir, model)
    print(f"selfcheck: ok: torch {torch.__version__}{engines}, model {model.config.name} "
          f"(folds {' '.join(model.folds)}, {model.num_classes} classes{', MIND input' if mind else ''}), "
          f"forward on {shape[2:]}")


def check_openvino(model_dir: Path, torch_model) -> str:
    """Where the image has openvino and the model its IR, the OpenVINO backend (with the pruned
    openvino package) must load and agree with torch on one full tile; returns a note for the ok line."""
    from inference.engines.choice import openvino_installed
    if not openvino_installed():
        return ""
    import torch

    from inference.loading import load_model
    try:   # fp32: compared with torch fp32 below
        model = load_model(model_dir, device="cpu", precision="fp32")
    except Exception as e:  # noqa: BLE001 - a pruned library shows up here
        fail(f"loading {model_dir} with OpenVINO: {type(e).__name__}: {e}")
    if model.plan.backend != "openvino":
        return " (openvino installed, model without IR: torch backend)"
    torch.manual_seed(0)
    tile = torch.randn(1, model.num_channels, *model.config.patch_size)
    with torch.no_grad():
        agree = (model.networks[0](tile).argmax(1) == torch_model.networks[0](tile).argmax(1)).float().mean()
    if agree < 0.999:
        fail(f"OpenVINO and torch disagree on {1 - float(agree):.2%} of a tile's voxels")
    return f", OpenVINO backend ({float(agree):.4f} argmax agreement with torch on one tile)"


if __name__ == "__main__":
    main()
