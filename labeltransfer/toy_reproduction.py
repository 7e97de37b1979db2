"""Toy-scale reproduction of the paper's CT -> MRI label transfer on phantoms (docs/flare.md section 5).

    PYTHONPATH=$PWD python -m labeltransfer.toy_reproduction --work /tmp/toy            # everything
    PYTHONPATH=$PWD python -m labeltransfer.toy_reproduction --work /tmp/toy --steps data,agreement,propagation

Steps (each skips work whose outputs exist, so an interrupted run continues):
  data         phantoms (phantoms.generate_case): labelled CT training subjects; an MRI pool and a test
               set of other subjects, each as T1 and T2 (each sequence on its own grid with a small rigid
               displacement, as the generator draws them). True MRI labels are kept for scoring only.
  agreement    MIND descriptors of CT vs T1/T2 of the same subjects agree far better than intensities.
  propagation  T1 true labels carried to T2: plain physical-space resampling vs affine correction,
               Dice against the T2 true labels.
  descriptors  Dataset902 = MIND descriptors of the CT set (Dataset901).
  round0       nnU-Net (nnUNetTrainerToy: nnU-Net's trainer, short schedule) on CT intensities (901)
               and on CT MIND descriptors (902); both applied to the MRI test set; the MIND model
               pseudo-labels the T1 pool (paper steps 1-2).
  round1       filter: T1 pseudo-labels with all 13 organs; train a T1 model on them; it pseudo-labels
               the remaining T1 pool (steps 3-4).
  round2       propagate every T1 label to the subject's T2 (affine); train the final model on all MRI
               plus the CT (step 6); score it.
  report       results/README.md: per-organ FLARE DSC/NSD per round, T1 and T2.

Training runs `nnUNetv2_plan_and_preprocess` and `nnUNetv2_train ... -tr nnUNetTrainerToy` as
subprocesses, with nnUNet_extTrainer pointing at labeltransfer/nnunet_trainers. Prediction uses the
project's predictor (inference.api.segment_folder), which computes the descriptors of
MIND models itself, so MRI folders are passed as they are. Scores use the project's FLARE
scorer (evaluation.score_case).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from flare.labels import ORGANS, dataset_json_labels
from inference import InferenceError
from inference.device import DEVICE_CHOICES, resolve_device
from inference.mind import mind_ssc
from labeltransfer import assemble as asm
from labeltransfer import descriptors, filter_labels, io, propagate
from training.steps import parse_steps, run_steps

STEPS = ("data", "agreement", "propagation", "descriptors", "round0", "round1", "round2", "report")
TRAINER = "nnUNetTrainerToy"
TRAINER_DIR = Path(__file__).resolve().parent / "nnunet_trainers"
CT_ID, CT_MIND_ID, T1_ID, FINAL_ID = 901, 902, 903, 904
# coarse grids (2.5-3.5 mm in-plane, 5-7 mm slices: ~120 x 110 x 40 voxels) keep CPU training small
DEFAULT_GEOMETRY = '{"inplane_range": [2.5, 3.5], "slice_range": [5, 7]}'
NAMES = {CT_ID: "ToyCT", CT_MIND_ID: "ToyCTMIND", T1_ID: "ToyT1", FINAL_ID: "ToyMRICT"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- phantoms -------------------------------------------------------------------------------------

def generate(seed: int, modality: str, geometry: dict) -> tuple[sitk.Image, sitk.Image]:
    """phantoms.generate_case; modality "ct", "t1" or "t2". Sequences of one subject (same seed) get
    their own grids and a small rigid displacement from the generator (0.5-3 deg, up to 5 mm per axis)."""
    from phantoms import generate_case  # the project's phantom generator (phantoms/)
    return generate_case(seed, modality, **geometry)


def step_data(w: Path, a: argparse.Namespace) -> None:
    ct = w / "raw" / f"Dataset{CT_ID:03d}_{NAMES[CT_ID]}"
    geometry = json.loads(a.phantom_geometry)
    if not (ct / "dataset.json").exists():
        for i in range(a.n_ct):
            img, lab = generate(i, "ct", geometry)
            io.write_image_atomic(img, ct / "imagesTr" / f"ct{i:03d}_0000.nii.gz")
            io.write_image_atomic(lab, ct / "labelsTr" / f"ct{i:03d}.nii.gz")
        io.write_json_atomic({"channel_names": {"0": "CT"}, "labels": dataset_json_labels(),
                              "numTraining": a.n_ct, "file_ending": ".nii.gz"}, ct / "dataset.json")
        log(f"data: {a.n_ct} CT training cases in {ct}")
    for split, first, n in (("pool", 1000, a.n_pool), ("test", 2000, a.n_test)):
        d = w / split
        if (d / "done").exists():
            continue
        for s in range(first, first + n):
            for seq in ("T1", "T2"):
                img, lab = generate(s, seq.lower(), geometry)
                io.write_image_atomic(img, d / "images" / f"s{s}_{seq}_0000.nii.gz")
                io.write_image_atomic(lab, d / "truth" / f"s{s}_{seq}.nii.gz")  # scoring only
        d.mkdir(parents=True, exist_ok=True)
        (d / "done").write_text("")
        log(f"data: {n} {split} subjects (T1 and T2, each on its own grid) in {d}")


# --- cheap measurements ---------------------------------------------------------------------------

def _corr(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u - u.mean(), v - v.mean()
    return float((u * v).sum() / np.sqrt((u * u).sum() * (v * v).sum()))


def step_agreement(w: Path, a: argparse.Namespace) -> str:
    """Correlation CT vs MRI of the same subject (phantom grid, inside the body): intensities vs MIND."""
    import torch
    geometry = json.loads(a.phantom_geometry)
    rows = []
    for s in range(2000, 2000 + max(a.n_test, 1)):
        # one grid for all three modalities (no sequence motion), so voxels compare one to one
        ct_img, lab = generate(s, "ct", {**geometry, "motion": False})
        grid = {"spacing": ct_img.GetSpacing(), "size": ct_img.GetSize(), "origin": ct_img.GetOrigin(),
                "direction": ct_img.GetDirection(), "motion": False}
        ct = sitk.GetArrayFromImage(ct_img).astype(np.float32)
        body = (ct > -500) | (sitk.GetArrayFromImage(lab) > 0)  # body: CT above -500 HU, plus the organs
        dc = mind_ssc(torch.from_numpy(ct), slab=16).numpy()
        for seq in ("T1", "T2"):
            mr = sitk.GetArrayFromImage(generate(s, seq.lower(), grid)[0]).astype(np.float32)
            dm = mind_ssc(torch.from_numpy(mr), slab=16).numpy()
            rows.append((f"s{s}", seq, _corr(ct[body], mr[body]),
                         float(np.mean([_corr(dc[k][body], dm[k][body]) for k in range(12)]))))
    lines = ["| subject | MRI | intensity corr. CT vs MRI | MIND corr. (mean of 12 channels) |", "|---|---|---|---|"]
    lines += [f"| {s} | {m} | {ci:.3f} | {cm:.3f} |" for s, m, ci, cm in rows]
    for m in ("T1", "T2"):
        sel = [r for r in rows if r[1] == m]
        lines.append(f"| **mean** | {m} | {np.mean([r[2] for r in sel]):.3f} | {np.mean([r[3] for r in sel]):.3f} |")
    text = ("Descriptor agreement, CT vs MRI phantoms of the same subject (Pearson correlation inside the body; "
            "MIND r=1, d=2, box)\n\n" + "\n".join(lines) + "\n")
    io.write_text_atomic(text, w / "results" / "agreement.md")
    log("agreement:\n" + text)
    return text


def organ_dice(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    out = {}
    for o in ORGANS:
        x, y = a == o.label, b == o.label
        s = x.sum() + y.sum()
        out[o.label] = 1.0 if s == 0 else 2.0 * np.logical_and(x, y).sum() / s
    return out


MODES = ("none", "rigid", "affine")  # none = plain physical-space resampling
COLUMNS = MODES + ("ceiling",)


def _label_scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(mean over the 13 organs of the organ Dice, label-aware foreground Dice)."""
    per = organ_dice(pred, truth)
    fg = 2.0 * np.sum((pred == truth) & (truth > 0)) / max((pred > 0).sum() + (truth > 0).sum(), 1)
    return float(np.mean(list(per.values()))), float(fg)


def step_propagation(w: Path, a: argparse.Namespace) -> str:
    """T1 true labels -> T2 grid, plain resampling vs rigid / affine correction; Dice vs T2 true labels.

    The ceiling column is what perfect registration would give on these grids: the subject rendered
    without sequence motion as T1 and as T2 (each on its own grid), the T1 label resampled onto the T2
    grid with the identity. What is left below 1 there is the discretisation of two grids.
    """
    geometry = json.loads(a.phantom_geometry)
    d = w / "test" if a.n_pool == 0 else w / "pool"
    rows = []
    for lab_path in sorted((d / "truth").glob("*_T1.nii.gz")):
        subj = lab_path.name[: -len("_T1.nii.gz")]
        lab = sitk.ReadImage(str(lab_path))
        t1 = sitk.ReadImage(str(d / "images" / f"{subj}_T1_0000.nii.gz"))
        t2 = sitk.ReadImage(str(d / "images" / f"{subj}_T2_0000.nii.gz"))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "truth" / f"{subj}_T2.nii.gz")))
        res = {}
        for mode in MODES:
            t0 = time.perf_counter()
            out, info = propagate.propagate_label(lab, t1, t2, mode)
            res[mode] = (*_label_scores(sitk.GetArrayFromImage(out), truth), time.perf_counter() - t0, info)
        still = {"motion": False, **geometry}
        l1 = generate(int(subj[1:]), "t1", still)[1]
        l2 = generate(int(subj[1:]), "t2", still)[1]
        res["ceiling"] = (*_label_scores(sitk.GetArrayFromImage(propagate.resample_label(l1, l2)),
                                         sitk.GetArrayFromImage(l2)), 0.0, None)
        rows.append((subj, res))
        log(f"  {subj}: " + ", ".join(f"{m} {res[m][0]:.3f}/{res[m][1]:.3f}" for m in COLUMNS)
            + " (mean organ / foreground Dice)")
    head = " | ".join(f"{m}: mean organ Dice | {m}: foreground Dice" for m in COLUMNS)
    lines = [f"| subject | {head} | affine s |", "|---|" + "---|---|" * len(COLUMNS) + "---|"]
    for subj, r in rows:
        cells = " | ".join(f"{r[m][0]:.3f} | {r[m][1]:.3f}" for m in COLUMNS)
        notes = "; ".join(f"{m}: {r[m][3].fallback}" for m in MODES if r[m][3].fallback)
        lines.append(f"| {subj} | {cells} | {r['affine'][2]:.1f} |" + (f" {notes}" if notes else ""))
    def mean(col: str, k: int) -> float:
        return float(np.mean([r[col][k] for _, r in rows]))
    cells = " | ".join(f"{mean(m, 0):.3f} | {mean(m, 1):.3f}" for m in COLUMNS)
    lines.append(f"| **mean** | {cells} | {mean('affine', 2):.1f} |")
    text = ("Label propagation T1 -> T2 (true T1 labels carried to the T2 grid; Dice against the true T2 labels; "
            "none = plain physical-space resampling; ceiling = perfect registration on these grids; mean organ "
            "Dice = mean over the 13 organs, foreground Dice = label-aware over all organ voxels)\n\n"
            + "\n".join(lines) + "\n")
    io.write_text_atomic(text, w / "results" / "propagation.md")
    io.write_json_atomic({m: {"mean_organ_dice": mean(m, 0), "foreground_dice": mean(m, 1), "seconds": mean(m, 2)}
                          for m in COLUMNS}, w / "results" / "propagation.json")
    log("propagation:\n" + text)
    return text


# --- nnU-Net training and prediction ---------------------------------------------------------------

def nnunet_env(w: Path) -> dict:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(w / "raw"), nnUNet_preprocessed=str(w / "preprocessed"),
               nnUNet_results=str(w / "results_nnunet"), nnUNet_extTrainer=str(TRAINER_DIR),
               nnUNet_n_proc_DA=os.environ.get("nnUNet_n_proc_DA", "2"), nnUNet_compile="false")
    # the toy trainer derives from training.trainer: importable in nnU-Net's subprocesses without an install
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([repo] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def plans_name(a: argparse.Namespace) -> str:
    """nnU-Net's default plans, or plans for a smaller GPU-memory target (smaller patch, faster on CPU)."""
    return "nnUNetPlans" if not a.gpu_memory_target else f"nnUNetPlans_{a.gpu_memory_target:g}GB"


def model_dir(w: Path, dataset_id: int, a: argparse.Namespace) -> Path:
    return (w / "results_nnunet" / f"Dataset{dataset_id:03d}_{NAMES[dataset_id]}"
            / f"{TRAINER}__{plans_name(a)}__3d_fullres")


def narrow_plans(plans_file: Path, base_features: int, max_features: int = 64) -> None:
    """Narrow the 3d_fullres U-Net of a plans file in place (training.plans.narrow_features). The
    preprocessed data does not depend on the widths, so it stays valid."""
    from training.plans import narrow_features
    plans = json.loads(plans_file.read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = narrow_features(len(arch["features_per_stage"]), base_features, max_features)
    io.write_json_atomic(plans, plans_file)


def train(w: Path, dataset_id: int, a: argparse.Namespace, timings: dict) -> Path:
    """Plan, preprocess and train fold 'all' with nnU-Net's own tools (subprocesses); returns the model folder."""
    out = model_dir(w, dataset_id, a)
    if (out / "fold_all" / "checkpoint_final.pth").exists():
        return out
    env = nnunet_env(w)
    env.update(LT_TOY_EPOCHS=str(a.epochs), LT_TOY_ITERS=str(a.iterations), LT_TOY_VAL_ITERS="2")
    t0 = time.perf_counter()
    plans = plans_name(a)
    if not (w / "preprocessed" / f"Dataset{dataset_id:03d}_{NAMES[dataset_id]}" / f"{plans}.json").exists():
        extra = [] if not a.gpu_memory_target else ["-gpu_memory_target", f"{a.gpu_memory_target:g}",
                                                        "-overwrite_plans_name", plans]
        subprocess.run([_bin("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", "3d_fullres",
                        "--verify_dataset_integrity", "-np", "1", *extra], env=env, check=True)
        if a.features:
            narrow_plans(w / "preprocessed" / f"Dataset{dataset_id:03d}_{NAMES[dataset_id]}" / f"{plans}.json",
                         a.features)
    t1 = time.perf_counter()
    subprocess.run([_bin("nnUNetv2_train"), str(dataset_id), "3d_fullres", "all", "-tr", TRAINER, "-p", plans,
                    "-device", a.device], env=env, check=True)
    timings[f"Dataset{dataset_id:03d}"] = {"plan_preprocess_s": round(t1 - t0, 1),
                                           "train_s": round(time.perf_counter() - t1, 1),
                                           "epochs": a.epochs, "iterations_per_epoch": a.iterations}
    return out


def predict(model: Path, images: Path, out: Path, a: argparse.Namespace, cases: list[str] | None = None) -> None:
    """Predict <case>_0000 files of `images` (all, or `cases`) into out/<case>.nii.gz; skips existing."""
    from inference.api import segment_folder
    from inference.files.cases import Case
    from inference.loading import load_model
    names = list(io.list_image_cases(images)) if cases is None else cases
    todo = [Case(c, [images / f"{c}_0000.nii.gz"]) for c in names if not (out / f"{c}.nii.gz").exists()]
    if not todo:
        return
    loaded = load_model(model, ["all"], device=a.device)
    results = segment_folder(images, out, model=loaded, cases=todo,
                             on_result=lambda r: log(f"  {r.case}: {'ok' if r.ok else r.error}"))
    failed = {r.case: r.error for r in results if not r.ok}
    if failed:
        raise RuntimeError(f"prediction failed for {failed}")


# --- scoring --------------------------------------------------------------------------------------

def score_folder(pred_dir: Path, truth_dir: Path, cases: list[str]) -> dict[str, float]:
    """Mean over cases of each organ's DSC and NSD."""
    from evaluation import score_case  # the project's FLARE scorer (official rules)
    rows = [score_case(pred_dir / f"{c}.nii.gz", truth_dir / f"{c}.nii.gz") for c in cases]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _score_test(w: Path, name: str, pred_dir: Path, scores: dict) -> None:
    for seq in ("T1", "T2"):
        cases = sorted(c for c in io.list_label_cases(w / "test" / "truth") if c.endswith(f"_{seq}"))
        scores[f"{name} | {seq}"] = score_folder(pred_dir, w / "test" / "truth", cases)
    _save_scores(w, scores)


def _load_scores(w: Path) -> dict:
    p = w / "results" / "scores.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _save_scores(w: Path, scores: dict) -> None:
    io.write_json_atomic(scores, w / "results" / "scores.json")


# --- rounds ---------------------------------------------------------------------------------------

def step_descriptors(w: Path, a: argparse.Namespace) -> None:
    src = w / "raw" / f"Dataset{CT_ID:03d}_{NAMES[CT_ID]}"
    dst = w / "raw" / f"Dataset{CT_MIND_ID:03d}_{NAMES[CT_MIND_ID]}"
    params = {"radius": 1, "dilation": 2, "patch": "box", "sigma": 0.8}
    descriptors.convert_dataset(src, dst, params, link="copy", log=log)


def step_round0(w: Path, a: argparse.Namespace, timings: dict) -> None:
    scores = _load_scores(w)
    for did, name in ((CT_ID, "round 0: CT intensity model"), (CT_MIND_ID, "round 0: CT MIND model")):
        model = train(w, did, a, timings)
        pred = w / "pred" / f"test_{did}"
        predict(model, w / "test" / "images", pred, a)
        _score_test(w, name, pred, scores)
    # the MIND model pseudo-labels the T1 pool (paper step 2)
    t1_pool = sorted(c for c in io.list_image_cases(w / "pool" / "images") if c.endswith("_T1"))
    predict(model_dir(w, CT_MIND_ID, a), w / "pool" / "images", w / "pred" / "pool_round0", a, t1_pool)


def step_round1(w: Path, a: argparse.Namespace, timings: dict) -> None:
    scores = _load_scores(w)
    results, errors = filter_labels.filter_folder(w / "pred" / "pool_round0", log=lambda *_: None)
    keep = [r.case for r in results if r.keep]
    io.write_text_atomic(filter_labels.report_markdown(results, errors, "pool_round0", "all 13 organs present"),
                         w / "results" / "filter_round0.md")
    io.write_text_atomic("".join(f"{c}\n" for c in keep), w / "results" / "keep_round0.txt")
    log(f"round1: filter kept {len(keep)} of {len(results)} T1 pseudo-labels")
    if len(keep) < a.min_kept:
        raise SystemExit(f"round1: only {len(keep)} T1 pseudo-labels hold all 13 organs (< --min-kept {a.min_kept}); "
                         f"train round 0 longer (--epochs/--iterations) or use more pool subjects")
    t1_ds = w / "raw" / f"Dataset{T1_ID:03d}_{NAMES[T1_ID]}"
    if not (t1_ds / "dataset.json").exists():
        asm.assemble(t1_ds, [asm.Source(w / "pool" / "images", w / "pred" / "pool_round0",
                                        w / "results" / "keep_round0.txt", name="T1 kept")], link="copy", log=log)
    model = train(w, T1_ID, a, timings)
    pred = w / "pred" / f"test_{T1_ID}"
    predict(model, w / "test" / "images", pred, a)
    _score_test(w, "round 1: T1 model (filtered pseudo-labels)", pred, scores)
    # T1 labels of the whole pool: kept round-0 labels plus the T1 model's labels of the rest (step 4)
    rest = sorted(c for c in io.list_image_cases(w / "pool" / "images") if c.endswith("_T1") and c not in keep)
    predict(model, w / "pool" / "images", w / "pred" / "pool_round1", a, rest)
    for c in keep:
        io.place_file(w / "pred" / "pool_round0" / f"{c}.nii.gz", w / "pred" / "pool_round1" / f"{c}.nii.gz", "copy")


def step_round2(w: Path, a: argparse.Namespace, timings: dict) -> None:
    scores = _load_scores(w)
    labels = w / "pred" / "pool_round1"
    jobs, _ = propagate.build_jobs(w / "pool" / "images", labels, r"(?P<subject>s\d+)_(?P<sequence>T\d)",
                                       "T1", labels)
    rep = propagate.run_jobs(jobs, "affine", log=log)
    if rep.failed:
        raise RuntimeError(f"propagation failed: {rep.failed}")
    ct = w / "raw" / f"Dataset{CT_ID:03d}_{NAMES[CT_ID]}"
    final = w / "raw" / f"Dataset{FINAL_ID:03d}_{NAMES[FINAL_ID]}"
    if not (final / "dataset.json").exists():
        asm.assemble(final, [asm.Source(w / "pool" / "images", labels, name="MRI T1+T2"),
                             asm.Source(ct / "imagesTr", ct / "labelsTr", name="CT")], link="copy", log=log)
    final_a = argparse.Namespace(**{**vars(a), "epochs": a.final_epochs or a.epochs})
    model = train(w, FINAL_ID, final_a, timings)
    pred = w / "pred" / f"test_{FINAL_ID}"
    predict(model, w / "test" / "images", pred, a)
    name = "round 2: final model (all MRI + CT)"
    if final_a.epochs != a.epochs:  # a longer final schedule is reported as such, next to the rounds before
        name += f", {final_a.epochs} x {a.iterations} iterations"
    _score_test(w, name, pred, scores)


def step_report(w: Path, a: argparse.Namespace, timings: dict) -> str:
    scores = _load_scores(w)
    lines = ["| round / model | MRI | mean DSC | mean NSD | " + " | ".join(o.short for o in ORGANS) + " |",
             "|---|---|---|---|" + "---|" * len(ORGANS)]
    for key, s in scores.items():
        name, seq = key.split(" | ")
        dsc = [s[f"{o.short}_DSC"] for o in ORGANS]
        nsd = [s[f"{o.short}_NSD"] for o in ORGANS]
        lines.append(f"| {name} | {seq} | {np.mean(dsc):.3f} | {np.mean(nsd):.3f} | "
                     + " | ".join(f"{d:.2f}/{n:.2f}" for d, n in zip(dsc, nsd)) + " |")
    parts = ["# Toy-scale label transfer on phantoms", "",
             f"Run: {json.dumps({k: v for k, v in vars(a).items() if k not in ('work', 'steps')})}", "",
             "Per-organ cells: DSC/NSD, mean over the test cases.", ""] + lines
    if timings:
        parts += ["", "Training time (this machine):", "", "```", json.dumps(timings, indent=1), "```"]
    for extra in ("agreement.md", "propagation.md"):
        if (w / "results" / extra).exists():
            parts += ["", (w / "results" / extra).read_text()]
    text = "\n".join(parts) + "\n"
    io.write_text_atomic(text, w / "results" / "README.md")
    log("report:\n" + text)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m labeltransfer.toy_reproduction", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="work folder (phantoms, nnU-Net folders, predictions, results)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--n-ct", type=int, default=8, help="labelled CT training subjects (paper: 50)")
    p.add_argument("--n-pool", type=int, default=16, help="unlabelled MRI subjects, T1 + T2 each")
    p.add_argument("--n-test", type=int, default=4, help="MRI test subjects, T1 + T2 each")
    p.add_argument("--phantom-geometry", default=DEFAULT_GEOMETRY,
                   help=f"JSON keyword arguments for phantoms.generate_case (default {DEFAULT_GEOMETRY})")
    p.add_argument("--epochs", type=int, default=50, help="epochs per training (nnUNetTrainerToy; default 50)")
    p.add_argument("--iterations", type=int, default=40, help="training iterations per epoch (default 40)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="training/prediction device (auto: cuda when available)")
    p.add_argument("--gpu-memory-target", type=float, default=1.0,
                   help="GB for nnU-Net's planner (default 1): smaller gives smaller patches, faster CPU "
                        "iterations; 0 keeps nnU-Net's default plans (8 GB)")
    p.add_argument("--features", type=int, default=16,
                   help="first-stage features of the planned U-Net, doubled per stage up to 64 (as the default "
                        "model; 0 keeps nnU-Net's 32..320)")
    p.add_argument("--final-epochs", type=int, default=None,
                   help="epochs of the round-2 model (default: --epochs); it learns 13 organs from all MRI + CT, "
                        "and at toy scale the small organs need more iterations than the rounds before")
    p.add_argument("--min-kept", type=int, default=2, help="fewest filtered T1 pseudo-labels to go on with")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    try:
        chosen = parse_steps(a.steps, STEPS)
        a.device = resolve_device(a.device).type  # nnUNetv2_train takes cpu or cuda
    except (ValueError, InferenceError) as e:
        p.error(str(e))
    w = Path(a.work).resolve()
    a.work = str(w)
    tpath = w / "results" / "timings.json"
    timings = json.loads(tpath.read_text()) if tpath.exists() else {}
    table = {  # the recipe, in order
        "data": lambda: step_data(w, a),
        "agreement": lambda: step_agreement(w, a),
        "propagation": lambda: step_propagation(w, a),
        "descriptors": lambda: step_descriptors(w, a),
        "round0": lambda: step_round0(w, a, timings),
        "round1": lambda: step_round1(w, a, timings),
        "round2": lambda: step_round2(w, a, timings),
        "report": lambda: step_report(w, a, timings),
    }
    assert tuple(table) == STEPS

    def record(step: str, seconds: float) -> None:
        timings[f"step {step}"] = round(seconds, 1)
        io.write_json_atomic(timings, tpath)

    run_steps(table, chosen, log=log, on_done=record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
