"""nnU-Net's own predictor as a command: its CLI for a trained-model folder, the folds a folder holds,
and a view of a folder with nnU-Net's default (skimage) resampling. Table 6, the GPU check and the
comparison with nnU-Net (benchmarks.studies.compare_nnunet) run it the same way."""
from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from inference.files.atomic import write_json
from testsupport.model_folder import RESAMPLING

NNUNET_ENTRY = "nnunetv2.inference.predict_from_raw_data:predict_entry_point_modelfolder"

def model_folds(model_dir: Path, checkpoint: str = "checkpoint_final.pth") -> list[str]:
    """Fold names (all, 0, 1, ...) that have `checkpoint` in `model_dir`."""
    folds = sorted(p.name[len("fold_"):] for p in model_dir.glob("fold_*") if (p / checkpoint).is_file())
    if not folds:
        raise FileNotFoundError(f"{model_dir}: no fold_*/{checkpoint}")
    return folds

def with_default_resampling(model_dir: Path, out_dir: Path) -> Path:
    """A view of `model_dir` whose plans name nnU-Net's default (skimage) resampling; folds are symlinked."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    plans = json.loads((model_dir / "plans.json").read_text())
    for cfg in plans["configurations"].values():
        if "resampling_fn_data" in cfg or "inherits_from" not in cfg:
            cfg.update(json.loads(json.dumps(RESAMPLING["default"])))
    write_json(out_dir / "plans.json", plans)
    shutil.copy2(model_dir / "dataset.json", out_dir / "dataset.json")
    for fold in model_dir.glob("fold_*"):
        if fold.is_dir():
            (out_dir / fold.name).symlink_to(fold.resolve(), target_is_directory=True)
    return out_dir

def nnunet_command(inputs: Path, outputs: Path, model: Path, folds: Sequence[str], tta: bool,
                   device: str = "cpu", head: Sequence[str] | None = None) -> list[str]:
    """nnU-Net's own CLI for a trained-model folder (`head` replaces the executable, e.g. a capped runner)."""
    if head is None:
        exe = Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"
        mod, func = NNUNET_ENTRY.split(":")
        head = [str(exe)] if exe.is_file() else [sys.executable, "-c", f"from {mod} import {func} as m; m()"]
    cmd = list(head) + ["-i", str(inputs), "-o", str(outputs), "-m", str(model), "-f", *folds,
                        "-device", device, "--disable_progress_bar"]
    return cmd if tta else cmd + ["--disable_tta"]

