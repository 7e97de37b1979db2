"""Build-time check of the image's runtime venv (run by the Dockerfile from /workspace).

Fails the build, with a message saying what to do, when the predictor cannot run: predict.sh,
inference/ or weights/ missing, a module the predictor imports missing from the slimmed venv, or a
model that cannot be loaded. It loads the model in weights/ on the CPU, builds its network through
nnunetv2 and runs one forward pass on a small zero input, so a library that was left out or pruned
shows up here and not at the organisers'.

Usage (inside the builder stage): python -B docker/selfcheck.py [WORKSPACE]
"""
from __future__ import annotations

import argparse
import importlib
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

    # Everything the CLI imports on its hot path, plus the network builder it imports lazily.
    for module in ("inference.cli", "inference.api", "inference.files", "inference.loading",
                   "nnunetv2.utilities.get_network_from_plans", "SimpleITK", "numpy", "torch"):
        try:
            importlib.import_module(module)
        except ImportError as e:
            fail(f"import {module}: {e}. Add the missing package to docker/requirements.txt or pass "
                 f"--build-arg EXTRA_PIP='<package>'")

    import torch

    from inference.loading import load_model

    try:
        model = load_model(workspace / "weights", device="cpu", backend="torch")
    except Exception as e:  # noqa: BLE001 - InferenceError for a bad folder; anything else is a broken venv
        fail(f"loading {workspace / 'weights'}: {type(e).__name__}: {e}")
    if any(model.config.use_mask_for_norm):
        try:
            importlib.import_module("scipy.ndimage")
        except ImportError:
            fail("the model normalises inside a foreground mask (use_mask_for_norm), which needs scipy: "
                 "pass --build-arg EXTRA_PIP=scipy")

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
    engines = check_openvino(workspace / "weights", model)
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
    try:
        model = load_model(model_dir, device="cpu")
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
