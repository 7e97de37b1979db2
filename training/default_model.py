"""The project's default model: a compact 3d_fullres nnU-Net trained on phantoms, on a CPU.

    python -m training.default_model --work /tmp/flare_train --out weights/

Steps (each can be run alone with --steps; later steps reuse what earlier ones left in --work):
  data        phantom training set (MRI sequences + CT, subject seeds --train-seed ...) and held-out MRI
              set (seeds --heldout-seed ...), nnU-Net raw layout, grids drawn from the generator's presets
  plan        nnU-Net's fingerprint extraction and ExperimentPlanner (target spacing --spacing, patch
              size from --plan-gb), then the 3d_fullres U-Net narrowed to --features/--max-features
  preprocess  nnU-Net's DefaultPreprocessor for the compact plans
  train       nnUNetTrainerCPUShort (nnU-Net's nnUNetTrainerAdam, lr 3e-3, short schedule) on fold
              "all", CPU; the forward pass under bf16 autocast where the CPU has native bf16, else fp32
              (--precision)
  export      `inference.weights import` of the trained folder into --out (training state stripped)
  evaluate    our predictor on the held-out images, FLARE DSC/NSD with `evaluation`, then
              --out/provenance.json and --out/README.md with the per-organ table
  localizer   (only with --localizer or --steps localizer) the coarse localiser of ROI-first
              prediction, added to --out as localizer/ (training/localizer.py)

The nnU-Net folders (nnUNet_raw, nnUNet_preprocessed, nnUNet_results) live under --work, which should
be outside the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

from inference.files.atomic import write_json, write_text
from training.steps import parse_steps, run_steps
from training.trainer import build_cpu_trainer

STEPS = ("data", "plan", "preprocess", "train", "export", "evaluate")
DATASET_ID = 901
DATASET_NAME = f"Dataset{DATASET_ID:03d}_FLAREPhantoms"
PLANS_NAME = "nnUNetPlansCompact"
TRAINER = "nnUNetTrainerCPUShort"
CONFIGURATION = "3d_fullres"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.default_model",
                                 description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--work", type=Path, required=True, help="work folder for nnU-Net's data and results")
    ap.add_argument("-o", "--output", dest="out", type=Path, default=Path("weights"),
                    help="model folder to write (default weights/)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma list of steps (default: all: {','.join(STEPS)})")
    g = ap.add_argument_group("data")
    g.add_argument("--train-cases", type=int, default=70, help="training phantoms (default 70)")
    g.add_argument("--train-modalities", default="t1,t2,t1c,dwi,ct",
                   help="modalities cycled over training subjects (default t1,t2,t1c,dwi,ct)")
    g.add_argument("--train-geometries", default="preset,coarse",
                   help="grid families cycled over training subjects: preset (the generator's acquisition "
                        "presets) and/or coarse (sample-like) (default preset,coarse)")
    g.add_argument("--train-seed", type=int, default=100000, help="first training subject seed (default 100000)")
    g.add_argument("--heldout-cases", type=int, default=24, help="held-out MRI phantoms (default 24)")
    g.add_argument("--heldout-modalities", default="t1,t2,t1c,dwi",
                   help="modalities cycled over held-out subjects (default t1,t2,t1c,dwi)")
    g.add_argument("--heldout-geometries", default="coarse",
                   help="grid families cycled over held-out subjects (default coarse, like the samples)")
    g.add_argument("--heldout-seed", type=int, default=900000, help="first held-out subject seed (default 900000)")
    g.add_argument("--phantom-spacing", type=float, nargs=3, default=None, metavar=("SX", "SY", "SZ"),
                   help="fixed phantom grid spacing in mm (x, y, z) instead of the presets' random "
                        "spacing; for quick trials and tests")
    g = ap.add_argument_group("plans")
    g.add_argument("--spacing", type=float, nargs=3, default=[6.0, 3.0, 3.0], metavar=("Z", "Y", "X"),
                   help="target spacing in mm, nnU-Net's (z, y, x) order (default 6 3 3)")
    g.add_argument("--plan-gb", type=float, default=1.0,
                   help="ExperimentPlanner's GPU memory target in GB; it sets the patch size, smaller gives a "
                        "smaller patch (default 1: patch 32 x 80 x 96 at the default spacing)")
    g.add_argument("--features", type=int, default=16, help="features of the first stage (default 16)")
    g.add_argument("--max-features", type=int, default=64, help="feature cap per stage (default 64)")
    g.add_argument("--batch-size", type=int, default=2, help="batch size (default 2)")
    g = ap.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=140, help="epochs (default 140)")
    g.add_argument("--iterations", type=int, default=40, help="training iterations per epoch (default 40)")
    g.add_argument("--val-iterations", type=int, default=2, help="validation iterations per epoch (default 2)")
    g.add_argument("--seed", type=int, default=12345, help="seed of python/numpy/torch before training")
    g.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    g.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: the network's forward pass under bfloat16 autocast on a CPU with native bf16 "
                        "(AVX512-BF16/AMX; about 2x faster), else fp32 (default auto)")
    g.add_argument("--da-processes", type=int, default=1,
                   help="data augmentation worker processes, nnUNet_n_proc_DA (default 1)")
    g.add_argument("--continue", dest="continue_training", action="store_true",
                   help="continue an interrupted training from its checkpoint_latest.pth")
    g = ap.add_argument_group("other")
    g.add_argument("-j", "--workers", type=int, default=2, help="processes for data writing/preprocessing")
    from training.localizer import add_arguments as add_localizer_arguments
    add_localizer_arguments(ap)
    return ap


# --- paths ----------------------------------------------------------------------------------------

def set_nnunet_paths(work: Path) -> dict[str, Path]:
    """Point nnU-Net's three environment folders into `work` (nnunetv2 reads them lazily)."""
    paths = {"raw": work / "nnUNet_raw", "preprocessed": work / "nnUNet_preprocessed",
             "results": work / "nnUNet_results"}
    for key, env in (("raw", "nnUNet_raw"), ("preprocessed", "nnUNet_preprocessed"), ("results", "nnUNet_results")):
        paths[key].mkdir(parents=True, exist_ok=True)
        os.environ[env] = str(paths[key])
    paths["heldout"] = work / "heldout"
    paths["dataset"] = paths["raw"] / DATASET_NAME
    paths["trained"] = paths["results"] / DATASET_NAME / f"{TRAINER}__{PLANS_NAME}__{CONFIGURATION}"
    return paths


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- steps ----------------------------------------------------------------------------------------

def case_lists(args):
    """(training cases, held-out cases); raises ValueError if they, or the training cases and the
    committed sample cases, share a subject."""
    from training.data import check_disjoint, plan_cases, sample_seeds
    train = plan_cases(args.train_cases, args.train_seed, args.train_modalities, "phantom", args.train_geometries)
    heldout = plan_cases(args.heldout_cases, args.heldout_seed, args.heldout_modalities, "heldout",
                         args.heldout_geometries)
    check_disjoint(train, heldout)
    check_disjoint(train, sample_seeds())
    return train, heldout


def step_data(args, paths) -> None:
    from training.data import write_cases, write_dataset_json
    train, heldout = case_lists(args)
    _log(f"writing {len(train)} training phantoms to {paths['dataset']}")
    options = {"spacing": tuple(args.phantom_spacing)} if args.phantom_spacing else {}
    write_cases(str(paths["dataset"]), train, "Tr", args.workers, **options)
    # only the planned cases: a leftover file from another run must not join the training set
    wanted = {c.case_id for c in train}
    for sub, strip in (("imagesTr", "_0000.nii.gz"), ("labelsTr", ".nii.gz")):
        for f in (paths["dataset"] / sub).iterdir():
            if f.name.endswith(".nii.gz") and f.name[: -len(strip)] not in wanted:
                raise SystemExit(f"error: {f} is not part of this training set; remove it or use a fresh --work")
    write_dataset_json(str(paths["dataset"]), len(train), "FLAREPhantoms",
                       f"Synthetic abdominal phantoms ({args.train_modalities}), subject seeds "
                       f"{args.train_seed}..{args.train_seed + len(train) - 1}, by training.default_model")
    _log(f"writing {len(heldout)} held-out phantoms to {paths['heldout']}")
    write_cases(str(paths["heldout"]), heldout, "Ts", args.workers, **options)


def step_plan(args, paths) -> None:
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprint_dataset,
                                                                      plan_experiment_dataset)
    from training.plans import compact_plans

    _log("nnU-Net fingerprint extraction")
    extract_fingerprint_dataset(DATASET_ID, DatasetFingerprintExtractor, num_processes=args.workers,
                                check_dataset_integrity=True, clean=True, verbose=False)
    _log(f"nnU-Net experiment planning (target spacing {args.spacing}, {args.plan_gb} GB target)")
    _, identifier = plan_experiment_dataset(DATASET_ID, ExperimentPlanner, gpu_memory_target_in_gb=args.plan_gb,
                                            overwrite_target_spacing=args.spacing)
    pre = Path(os.environ["nnUNet_preprocessed"]) / DATASET_NAME
    plans = compact_plans(load_json(str(pre / f"{identifier}.json")), PLANS_NAME, args.features,
                          args.max_features, args.batch_size)
    save_json(plans, str(pre / f"{PLANS_NAME}.json"), sort_keys=False)
    cfg = plans["configurations"][CONFIGURATION]
    _log(f"plans {PLANS_NAME}: patch {cfg['patch_size']}, spacing {cfg['spacing']}, batch {cfg['batch_size']}, "
         f"features {cfg['architecture']['arch_kwargs']['features_per_stage']}")


def step_preprocess(args, paths) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset
    _log("nnU-Net preprocessing")
    preprocess_dataset(DATASET_ID, PLANS_NAME, (CONFIGURATION,), [args.workers], verbose=False)


def step_train(args, paths) -> dict:
    import torch
    trainer = build_cpu_trainer(args, DATASET_NAME, PLANS_NAME, CONFIGURATION, args.epochs, args.iterations,
                                args.val_iterations, args.continue_training)
    if args.continue_training:
        latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
        if not latest.is_file():
            raise SystemExit(f"error: --continue given but {latest} does not exist")
        trainer.load_checkpoint(str(latest))
    _log(f"training {TRAINER}: {args.epochs} epochs x {args.iterations} iterations, batch "
         f"{trainer.configuration_manager.batch_size}, patch {trainer.configuration_manager.patch_size}, "
         f"{torch.get_num_threads()} torch threads, {args.da_processes} augmentation process(es), "
         f"{'bf16 autocast' if trainer.uses_cpu_bf16 else 'fp32'}")
    t0 = time.time()
    trainer.run_training()
    seconds = time.time() - t0
    _log(f"training done in {seconds / 60:.1f} min")
    info = {"train_seconds": round(seconds, 1), "optimizer": type(trainer.optimizer).__name__,
            "initial_lr": trainer.initial_lr, "weight_decay": trainer.weight_decay,
            "epochs": args.epochs, "iterations_per_epoch": args.iterations,
            "val_iterations_per_epoch": args.val_iterations, "seed": args.seed,
            "torch_threads": torch.get_num_threads(), "da_processes": args.da_processes,
            "precision": "bf16 autocast (forward pass)" if trainer.uses_cpu_bf16 else "fp32",
            "final_ema_pseudo_dice": _float(trainer.logger.get_value("ema_fg_dice", step=-1)),
            "continued": args.continue_training}
    write_json(paths["trained"] / "train_info.json", info)
    return info


def _float(v):
    try:
        return round(float(v), 4)
    except (TypeError, ValueError):
        return None


def step_export(args, paths) -> None:
    from inference.weights import import_model
    _log(f"exporting {paths['trained']} -> {args.out}")
    import_model(paths["trained"], args.out, folds=["all"], overwrite=True)


SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


def predict_and_score(images: Path, labels: Path, pred: Path, model_dir: Path, workers: int):
    """Segment every image of `images` with our predictor into `pred` (replaced) and score it against
    `labels` with the FLARE rules. Returns (rows of the official CSV, prediction seconds)."""
    from evaluation.folder import score_folder
    from inference.api import ModelSpec, segment_folder

    if pred.exists():
        shutil.rmtree(pred)
    _log(f"predicting {images} with {model_dir}")
    t0 = time.time()
    # fp32 pinned: the scores must not depend on whether this CPU has bf16 (auto's choice there)
    results = segment_folder(images, pred, ModelSpec(model_dir, device="cpu", precision="fp32"),
                             on_result=lambda r: _log(f"  {r.case}: {'ok' if r.ok else r.error}"))
    seconds = time.time() - t0
    failed = [r.case for r in results if not r.ok]
    if failed:
        raise SystemExit(f"error: prediction failed for {failed}")
    scored = score_folder(pred, labels, workers=workers)
    if scored.errors or scored.missing:
        raise SystemExit(f"error: scoring problems: missing {scored.missing}, errors {scored.errors}")
    return scored.rows, seconds


def case_mean_dsc(row: dict) -> float:
    """Mean DSC over the 13 organs of one official CSV row."""
    from flare.labels import ORGANS
    return sum(row[f"{o.short}_DSC"] for o in ORGANS) / len(ORGANS)


def step_evaluate(args, paths, argv: list[str]) -> None:
    from evaluation.folder import write_csv
    from evaluation.report import format_table, summarise

    rows, predict_seconds = predict_and_score(paths["heldout"] / "imagesTs", paths["heldout"] / "labelsTs",
                                              args.work / "heldout_pred", args.out, args.workers)
    csv_path = Path(args.out) / "heldout_scores.csv"
    write_csv(rows, csv_path)
    csv_path.chmod(0o644)
    print(format_table(rows))
    samples = {}
    if (SAMPLES_DIR / "inputs").is_dir() and (SAMPLES_DIR / "labels").is_dir():
        sample_rows, _ = predict_and_score(SAMPLES_DIR / "inputs", SAMPLES_DIR / "labels",
                                           args.work / "samples_pred", args.out, args.workers)
        samples = {r["Name"].removesuffix(".nii.gz"): round(case_mean_dsc(r), 4) for r in sample_rows}
        _log(f"sample cases, mean DSC: {samples}")
    write_provenance(args, paths, argv, summarise(rows), len(rows), predict_seconds, samples)
    write_readme(args, paths, summarise(rows), len(rows), samples)


# --- provenance and README --------------------------------------------------------------------------

def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for name in ("torch", "nnunetv2", "dynamic_network_architectures", "batchgeneratorsv2", "numpy",
                 "SimpleITK", "scipy", "scikit-image", "blosc2"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _plans_summary(out: Path) -> dict:
    plans = json.loads((out / "plans.json").read_text())
    cfg = plans["configurations"][CONFIGURATION]
    arch = cfg["architecture"]["arch_kwargs"]
    return {"configuration": CONFIGURATION, "plans_name": plans.get("plans_name"),
            "spacing_zyx_mm": cfg["spacing"], "patch_size": cfg["patch_size"], "batch_size": cfg["batch_size"],
            "features_per_stage": arch["features_per_stage"], "strides": arch["strides"],
            "network": cfg["architecture"]["network_class_name"]}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_provenance(args, paths, argv, summary, n_cases, predict_seconds, samples) -> None:
    from inference.loading import load_model
    train, heldout = case_lists(args)
    info_file = paths["trained"] / "train_info.json"
    train_info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    net_params = sum(p.numel() for p in load_model(args.out, ["all"], backend="torch").networks[0].parameters())
    prov = {
        "command": recipe_command(argv),
        "step_seconds": json.loads((args.work / "step_seconds.json").read_text())
        if (args.work / "step_seconds.json").is_file() else {},
        "trainer": TRAINER + " (training/trainer.py: nnU-Net's nnUNetTrainerAdam, short schedule)",
        "training": train_info,
        "plans": _plans_summary(Path(args.out)),
        "network_parameters": int(net_params),
        "data": {
            "generator": "phantoms.generate_case(seed, modality, **training.data.GEOMETRIES[family])",
            "train": {"cases": len(train), "modalities": args.train_modalities,
                      "grid_families": args.train_geometries, "subject_seeds": [train[0].seed, train[-1].seed]},
            "heldout": {"cases": len(heldout), "modalities": args.heldout_modalities,
                        "grid_families": args.heldout_geometries,
                        "subject_seeds": [heldout[0].seed, heldout[-1].seed]},
            "fixed_spacing": args.phantom_spacing,
        },
        "heldout_scores": {
            "cases": n_cases,
            "predictor": "python -m inference --precision fp32 (no TTA), CPU",
            "predict_seconds": round(predict_seconds, 1),
            "per_organ": {name: {"dsc_mean": round(dm, 4), "dsc_std": round(ds, 4), "nsd_mean": round(nm, 4),
                                 "nsd_std": round(ns, 4)} for name, dm, ds, nm, ns in summary},
        },
        "sample_cases_mean_dsc": samples,
        "packages": package_versions(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "processor": platform.processor() or platform.machine()},
        "weights_bytes": _folder_bytes(Path(args.out)),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    path = Path(args.out) / "provenance.json"
    write_json(path, prov)
    _log(f"wrote {path}")


def write_readme(args, paths, summary, n_cases, samples) -> None:
    """weights/README.md: what the model is, how it was made, the held-out per-organ table."""
    from training.data import GEOMETRIES
    prov = json.loads((Path(args.out) / "provenance.json").read_text())
    p, t, d = prov["plans"], prov["training"], prov["data"]
    rows = "\n".join(f"| {name} | {100 * dm:.1f} ± {100 * ds:.1f} | {100 * nm:.1f} ± {100 * ns:.1f} |"
                     if name != "Average" else
                     f"| **mean over organs** | **{100 * dm:.1f} ± {100 * ds:.1f}** | "
                     f"**{100 * nm:.1f} ± {100 * ns:.1f}** |"
                     for name, dm, ds, nm, ns in summary)
    families = "; ".join(f"{k}: {v or 'the generator presets'}" for k, v in GEOMETRIES.items())
    steps = prov.get("step_seconds", {})
    total = sum(steps.values()) / 60 if steps else float("nan")
    sample_text = ", ".join(f"{k} {100 * v:.1f}" for k, v in samples.items()) if samples else "not run"
    text = f"""# Default model

A compact nnU-Net v2 `3d_fullres` model (`PlainConvUNet`, features {p['features_per_stage']},
{prov['network_parameters']:,} parameters) for the 13 FLARE organs, trained **only on synthetic
phantoms** (`phantoms/`): MRI sequences and CT. It makes the container segment out of the box and
stands in for a model trained on real FLARE data; do not expect it to work on real MRI.

Files: nnU-Net's trained-model layout (`dataset.json`, `plans.json`, `fold_all/checkpoint_final.pth`,
training state stripped by `python -m inference.weights import`), `manifest.json` (sha256 of each
file, checked at load), `provenance.json` (command, seeds, package versions, timings, scores) and
`heldout_scores.csv` (official FLARE CSV of the held-out cases).

## How it was made

    {prov['command']}

`training/default_model.py` (see `training/README.md`) runs nnU-Net's own fingerprint extraction,
ExperimentPlanner (target spacing {p['spacing_zyx_mm']} mm as z, y, x; patch {p['patch_size']}; batch
{p['batch_size']}), DefaultPreprocessor and trainer (`{TRAINER}`, a subclass of nnU-Net's
`nnUNetTrainerAdam`: AdamW at lr {t.get('initial_lr')}, {t.get('epochs')} epochs x {t.get('iterations_per_epoch')}
iterations instead of 1000 x 250; CPU, {t.get('precision', 'fp32')}). Only the feature widths of the planned network were
narrowed. Training data: {d['train']['cases']} phantoms ({d['train']['modalities']}),
subject seeds {d['train']['subject_seeds'][0]}-{d['train']['subject_seeds'][1]}, grid families {d['train']['grid_families']}
({families}). Wall time on {prov['machine']['cpu_count']} CPU cores: training
{t.get('train_seconds', float('nan')) / 60:.1f} min, all steps {total:.1f} min (`step_seconds` in provenance.json).

## Held-out phantoms

{n_cases} MRI phantoms ({d['heldout']['modalities']}; subject seeds {d['heldout']['subject_seeds'][0]}-{d['heldout']['subject_seeds'][1]},
never used in training; grid family {d['heldout']['grid_families']}, with drawn spacing, orientation
(axial, flipped or oblique), field of view and motion), predicted with our predictor
(`python -m inference --precision fp32`, no TTA, CPU) and scored with `python -m evaluation` (official FLARE 2024 Task 3
DSC / NSD rules). Mean ± std over cases, %:

| organ | DSC | NSD |
|---|---|---|
{rows}

Sample cases (`samples/`, mean DSC over 13 organs, %): {sample_text}.
"""
    write_text(Path(args.out) / "README.md", text)
    _log(f"wrote {Path(args.out) / 'README.md'}")


# --- main -------------------------------------------------------------------------------------------

def record_step_time(work: Path, step: str, seconds: float) -> None:
    """Keep the latest wall time of each step in <work>/step_seconds.json (steps may run in separate
    invocations; provenance reports them all)."""
    path = work / "step_seconds.json"
    times = json.loads(path.read_text()) if path.is_file() else {}
    times[step] = round(seconds, 1)
    write_json(path, times)


def recipe_command(argv: list[str]) -> str:
    """The command line that makes this model: argv without --steps (all steps) and --continue."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--steps":
            skip = True
            continue
        if a.startswith("--steps=") or a == "--continue":
            continue
        out.append(a)
    return " ".join(["python -m training.default_model"] + out)

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        chosen = parse_steps(args.steps, STEPS + ("localizer",))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from training.localizer import run as run_localizer
    args.work = args.work.resolve()
    args.out = args.out.resolve()
    paths = set_nnunet_paths(args.work)
    table = {  # the recipe, in order
        "data": lambda: step_data(args, paths),
        "plan": lambda: step_plan(args, paths),
        "preprocess": lambda: step_preprocess(args, paths),
        "train": lambda: step_train(args, paths),
        "export": lambda: step_export(args, paths),
        "evaluate": lambda: step_evaluate(args, paths, argv),
        "localizer": lambda: run_localizer(args, paths, argv),   # only when asked for (not in STEPS)
    }
    assert tuple(table) == STEPS + ("localizer",)
    t0 = time.time()
    if args.localizer and "localizer" not in chosen:
        chosen.append("localizer")   # --localizer: after the other chosen steps
    run_steps(table, chosen, log=_log, on_done=lambda step, seconds: record_step_time(args.work, step, seconds))
    _log(f"all done in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
