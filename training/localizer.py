"""The default model's localiser: a tiny nnU-Net at 8 mm that finds where the organs are.

    python -m training.default_model --work /tmp/flare_train --out weights/ --steps localizer

The predictor runs it on the whole image and the full model only inside the box of its foreground,
widened by a margin (inference/roi.py, docs/roi.md). It is trained by the same recipe as the default
model (nnU-Net's fingerprint, ExperimentPlanner, DefaultPreprocessor, nnUNetTrainerCPUShort), with:
  - one foreground label, "organs" (the union of the 13 FLARE labels): the box is all it must give;
  - phantoms on large fields of view (chest to pelvis, much air) and on the usual abdominal slabs, so
    that it sees both the cases it saves time on and the ones it must leave alone;
  - an 8 mm isotropic target spacing, a small patch and narrow features (a checkpoint of well under
    1 MB, a few tiles per case).
The trained folder is imported next to the main model as <out>/localizer/ with
`inference.weights.import_model(..., localizer=...)` (one manifest covers both), and its recipe and
step times are added to <out>/provenance.json under "localizer".
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from inference.files.atomic import atomic_output, write_json

DATASET_ID = 902
DATASET_NAME = f"Dataset{DATASET_ID:03d}_FLAREPhantomsLocalizer"
PLANS_NAME = "nnUNetPlansLocalizer"
CONFIGURATION = "3d_fullres"
LOCALIZER_LABELS = {"background": 0, "organs": 1}


def add_arguments(ap) -> None:
    """The localiser's options on the default model's parser."""
    g = ap.add_argument_group("localizer (step 'localizer', or --localizer after the other steps)")
    g.add_argument("--localizer", action="store_true",
                   help="also train the localiser and add it to --out as localizer/ (see training/localizer.py)")
    g.add_argument("--loc-cases", type=int, default=40, help="localiser training phantoms (default 40)")
    g.add_argument("--loc-geometries", default="large,coarse",
                   help="grid families cycled over its subjects (default large,coarse)")
    g.add_argument("--loc-spacing", type=float, default=8.0, help="isotropic target spacing in mm (default 8)")
    g.add_argument("--loc-plan-gb", type=float, default=0.25,
                   help="ExperimentPlanner's memory target in GB (sets the patch size; default 0.25)")
    g.add_argument("--loc-features", type=int, default=8, help="features of the first stage (default 8)")
    g.add_argument("--loc-max-features", type=int, default=32, help="feature cap per stage (default 32)")
    g.add_argument("--loc-epochs", type=int, default=6, help="epochs (default 6)")
    g.add_argument("--loc-iterations", type=int, default=20, help="iterations per epoch (default 20)")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] localizer: {msg}", flush=True)


def binarize_labels(label_dir: Path) -> None:
    """Every label map in `label_dir` to 0/1 (organ or not), in place, each written atomically."""
    import SimpleITK as sitk
    for path in sorted(label_dir.glob("*.nii.gz")):
        image = sitk.ReadImage(str(path))
        binary = sitk.Cast(image > 0, sitk.sitkUInt8)
        binary.CopyInformation(image)
        with atomic_output(path) as tmp:
            sitk.WriteImage(binary, str(tmp), useCompression=True)


def step_data(args, raw: Path) -> list:
    from training.data import check_disjoint, plan_cases, sample_seeds, write_cases
    cases = plan_cases(args.loc_cases, args.train_seed, args.train_modalities, "loc", args.loc_geometries)
    heldout = plan_cases(args.heldout_cases, args.heldout_seed, args.heldout_modalities, "heldout",
                         args.heldout_geometries)
    check_disjoint(cases, heldout)
    check_disjoint(cases, sample_seeds())
    _log(f"writing {len(cases)} phantoms to {raw}")
    write_cases(str(raw), cases, "Tr", args.workers)
    binarize_labels(raw / "labelsTr")
    content = {"name": "FLAREPhantomsLocalizer",
               "description": f"Synthetic phantoms ({args.train_modalities}; grid families {args.loc_geometries}), "
                              f"subject seeds {cases[0].seed}..{cases[-1].seed}, the 13 FLARE organs as one "
                              f"label; by training.localizer",
               "channel_names": {"0": "MRI"}, "labels": LOCALIZER_LABELS, "numTraining": len(cases),
               "file_ending": ".nii.gz"}
    (raw / "dataset.json").write_text(json.dumps(content, indent=2) + "\n")
    return cases


def step_plan(args) -> dict:
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprint_dataset,
                                                                      plan_experiment_dataset)
    from training.plans import compact_plans

    extract_fingerprint_dataset(DATASET_ID, DatasetFingerprintExtractor, num_processes=args.workers,
                                check_dataset_integrity=True, clean=True, verbose=False)
    spacing = [args.loc_spacing] * 3
    _, identifier = plan_experiment_dataset(DATASET_ID, ExperimentPlanner, gpu_memory_target_in_gb=args.loc_plan_gb,
                                            overwrite_target_spacing=spacing)
    pre = Path(os.environ["nnUNet_preprocessed"]) / DATASET_NAME
    plans = compact_plans(load_json(str(pre / f"{identifier}.json")), PLANS_NAME, args.loc_features,
                          args.loc_max_features, 2)
    save_json(plans, str(pre / f"{PLANS_NAME}.json"), sort_keys=False)
    cfg = plans["configurations"][CONFIGURATION]
    _log(f"plans: patch {cfg['patch_size']}, spacing {cfg['spacing']}, "
         f"features {cfg['architecture']['arch_kwargs']['features_per_stage']}")
    return cfg


def step_train(args) -> dict:
    from training.trainer import build_cpu_trainer
    trainer = build_cpu_trainer(args, DATASET_NAME, PLANS_NAME, CONFIGURATION, args.loc_epochs,
                                args.loc_iterations, val_iterations=2)
    _log(f"training: {args.loc_epochs} epochs x {args.loc_iterations} iterations, "
         f"{'bf16 autocast' if trainer.uses_cpu_bf16 else 'fp32'}")
    t0 = time.time()
    trainer.run_training()
    return {"train_seconds": round(time.time() - t0, 1), "epochs": args.loc_epochs,
            "iterations_per_epoch": args.loc_iterations, "seed": args.seed,
            "precision": "bf16 autocast (forward pass)" if trainer.uses_cpu_bf16 else "fp32",
            "final_ema_pseudo_dice": _float(trainer.logger.get_value("ema_fg_dice", step=-1)),
            "output_folder": str(Path(trainer.output_folder).parent)}   # the model folder (fold_all/ inside)


def _float(v):
    try:
        return round(float(v), 4)
    except (TypeError, ValueError):
        return None


def attach_localizer(out: Path, trained: Path) -> None:
    """Re-import the model in `out` with `trained` as its localiser; the files import does not write
    (README.md, provenance.json, heldout_scores.csv) are kept."""
    from inference.weights import import_model
    out = Path(out)
    keep = {p.name: p.read_bytes() for p in out.iterdir()
            if p.is_file() and p.name in ("README.md", "provenance.json", "heldout_scores.csv")}
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    with tempfile.TemporaryDirectory(prefix="main-model-", dir=out.parent) as tmp:
        main_copy = Path(tmp) / "model"
        shutil.copytree(out, main_copy, ignore=shutil.ignore_patterns("localizer"))
        import_model(main_copy, out, folds=manifest.get("folds"), half=bool(manifest.get("half", False)),
                     overwrite=True, localizer=trained, source_label=manifest.get("source"))
    for name, data in keep.items():
        (out / name).write_bytes(data)
        (out / name).chmod(0o644)


def run(args, paths: dict, argv: list[str]) -> None:
    """All localiser steps: data, plan, preprocess, train, attach to --out, provenance."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset
    raw = paths["raw"] / DATASET_NAME
    seconds, t = {}, time.time()
    cases = step_data(args, raw)
    seconds["data"], t = round(time.time() - t, 1), time.time()
    cfg = step_plan(args)
    seconds["plan"], t = round(time.time() - t, 1), time.time()
    preprocess_dataset(DATASET_ID, PLANS_NAME, (CONFIGURATION,), [args.workers], verbose=False)
    seconds["preprocess"], t = round(time.time() - t, 1), time.time()
    train_info = step_train(args)
    seconds["train"], t = round(time.time() - t, 1), time.time()
    trained = Path(train_info.pop("output_folder"))
    attach_localizer(args.out, trained)
    seconds["export"] = round(time.time() - t, 1)
    size = sum(p.stat().st_size for p in (Path(args.out) / "localizer").rglob("*") if p.is_file())
    record = {
        "command": "python -m training.default_model " + " ".join(a for a in argv),
        "step_seconds": seconds,
        "total_minutes": round(sum(seconds.values()) / 60, 1),
        "training": train_info,
        "plans": {"spacing_zyx_mm": cfg["spacing"], "patch_size": cfg["patch_size"],
                  "batch_size": cfg["batch_size"],
                  "features_per_stage": cfg["architecture"]["arch_kwargs"]["features_per_stage"]},
        "data": {"cases": len(cases), "modalities": args.train_modalities, "grid_families": args.loc_geometries,
                 "subject_seeds": [cases[0].seed, cases[-1].seed], "labels": LOCALIZER_LABELS},
        "bytes": size,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    prov_path = Path(args.out) / "provenance.json"
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    prov["localizer"] = record
    write_json(prov_path, prov)
    _log(f"done in {record['total_minutes']} min; localizer/ is {size / 1e6:.2f} MB; recorded in {prov_path}")
