"""Accuracy of the fast network paths against the exact one, on held-out phantoms (issue #16, item 7).

    flock /tmp/flare-measure.lock python -m benchmarks.studies.path_agreement [-m weights] [-o benchmarks/results]
                                                                      [--cases 8] [--no-roi] [--work DIR]

1. Held-out phantoms are generated on the fly with the generator, subject seeds, modalities and grid
   family of the model's own held-out evaluation (the model folder's provenance.json "data.heldout";
   without one, training.default_model's defaults: seeds from 900000, t1/t2/t1c/dwi, grid "coarse"),
   the first --cases of them, written as NIfTI images with their truth labels (training.data).
2. Each path is loaded once, in this process, with inference.loading.load_model, and predicts every case
   through inference.api.segment_folder (as `python -m inference` does):
     (a) default:   backend auto, precision auto (OpenVINO where the IR and openvino are there; bf16 on
                    a CPU with native bfloat16, fp32 elsewhere: inference.engines.choice);
     (b) reference: --backend torch --precision fp32 --batch-size 1 (the exact path);
     (c) fp32:      --precision fp32 where the default runs bf16 (its network in float32: the time bf16
                    saves); on CUDA, bf16: --precision bf16 where the GPU has it.
   The model's localiser (ROI) is used as shipped; --no-roi compares whole-image paths.
3. Per label, the Dice between (a) and (b) and between (c) and (b): the minimum over cases and the
   pooled Dice (all cases' voxels together), against the targets every label >= 0.97 and mean >= 0.99.
   A label absent from both maps of a case agrees (Dice 1). Each path's mean DSC against the truth
   (FLARE rules, evaluation.folder.score_case), and its difference to (b) in points, against 0.5.
Writes path_agreement_<machine>[_noroi].md and .json into -o (default benchmarks/results/).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from benchmarks.common import (REPO, command_line, cpu_name, dice_from_counts, load_average, metadata_markdown,
                               results_dir, run_metadata, write_json, write_text)
from inference import InferenceError

DEFAULT_MODEL = REPO / "weights"
# training.default_model's held-out defaults, used when a model folder has no provenance.json.
HELDOUT_DEFAULTS = {"first_seed": 900000, "modalities": "t1,t2,t1c,dwi", "grid_families": "coarse"}
LABEL_TARGET = 0.97      # every label's Dice between paths
MEAN_TARGET = 0.99       # mean over labels
TRUTH_TARGET_POINTS = 0.5  # |mean DSC against the truth, path - reference| in points (%)
PACKAGES = ("numpy", "torch", "openvino", "nnunetv2", "SimpleITK", "nibabel")


@dataclass(frozen=True)
class PathSpec:
    key: str        # "default", "reference", "fp32" or "bf16"
    title: str      # how the report names it
    options: dict   # load_model keyword arguments


REFERENCE = PathSpec("reference", "(b) --backend torch --precision fp32 --batch-size 1",
                     {"backend": "torch", "precision": "fp32", "batch_size": 1})
DEFAULT = PathSpec("default", "(a) default (backend auto, precision auto)", {})
BF16 = PathSpec("bf16", "(c) --precision bf16", {"precision": "bf16"})
FP32 = PathSpec("fp32", "(c) --precision fp32 (the default's network in float32)", {"precision": "fp32"})


# --- the machine ------------------------------------------------------------------------------------

def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def bf16_status(device_type: str) -> tuple[bool, str]:
    """(measurable, a line saying why or why not). On the CPU only with native bfloat16 (the rule of
    inference.engines.choice: emulated bf16 is refused there)."""
    from inference.engines.choice import NATIVE_BF16_FLAGS, cpu_flags, cpu_has_native_bf16
    if device_type == "cuda":
        import torch
        ok = torch.cuda.is_bf16_supported()
        return ok, "bf16: measured on CUDA" if ok else "bf16: not measurable on this GPU (no bfloat16 support)"
    present = sorted(cpu_flags() & set(NATIVE_BF16_FLAGS))
    if cpu_has_native_bf16():
        how = f"flags {', '.join(present)}" if present else "oneDNN reports native bf16"
        return True, f"bf16: measured ({cpu_name()}, native bf16: {how})"
    return False, (f"bf16: not measurable on this CPU (no native bf16: flags {' and '.join(NATIVE_BF16_FLAGS)} "
                   f"absent from /proc/cpuinfo, and oneDNN reports none); CPU: {cpu_name()}")


# --- the cases --------------------------------------------------------------------------------------

def heldout_settings(model_dir: Path) -> dict:
    """Seeds, modalities and grid families of the model's held-out evaluation (its provenance.json)."""
    try:
        held = json.loads((model_dir / "provenance.json").read_text())["data"]["heldout"]
        return {"first_seed": int(held["subject_seeds"][0]), "modalities": held["modalities"],
                "grid_families": held["grid_families"], "source": f"{model_dir / 'provenance.json'}"}
    except (OSError, KeyError, ValueError, TypeError, IndexError):
        return {**HELDOUT_DEFAULTS, "source": "training.default_model defaults (no provenance.json)"}


def write_heldout_cases(work: Path, n: int, settings: dict, quiet: bool) -> list:
    """work/imagesTs/<id>_0000.nii.gz and work/labelsTs/<id>.nii.gz for the first n held-out cases
    (kept when already there); returns the PhantomCase list."""
    from training.data import plan_cases, write_cases
    cases = plan_cases(n, settings["first_seed"], settings["modalities"], "heldout", settings["grid_families"])
    write_cases(str(work), cases, "Ts", progress=not quiet)
    return cases


# --- agreement --------------------------------------------------------------------------------------

def label_overlaps(a: np.ndarray, b: np.ndarray, labels: list[int]) -> dict[int, tuple[int, int]]:
    """Per label: (|A & B|, |A| + |B|) of two label maps on one grid. One pass with bincount instead
    of a mask per label."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    size = max(int(a.max(initial=0)), int(b.max(initial=0)), max(labels, default=0)) + 1
    both = np.bincount(a[a == b].ravel(), minlength=size)
    sizes = np.bincount(a.ravel(), minlength=size) + np.bincount(b.ravel(), minlength=size)
    return {label: (int(both[label]), int(sizes[label])) for label in labels}


def agreement_table(per_case: dict[str, dict[int, tuple[int, int]]], labels: list[int]) -> dict:
    """From per-case overlaps: per label the minimum over cases (and which case) and the pooled Dice;
    the lowest label and the mean over labels of each."""
    rows = {}
    for label in labels:
        by_case = {case: dice_from_counts(*ov[label]) for case, ov in per_case.items()}
        worst = min(by_case, key=by_case.get)
        pooled = dice_from_counts(sum(ov[label][0] for ov in per_case.values()), sum(ov[label][1] for ov in per_case.values()))
        rows[label] = {"min": by_case[worst], "min_case": worst, "pooled": pooled}
    summary = {}
    for column in ("min", "pooled"):
        lowest = min(rows, key=lambda k: rows[k][column])
        summary[column] = {"lowest_label": lowest, "lowest": rows[lowest][column],
                           "mean": float(np.mean([r[column] for r in rows.values()]))}
    summary["meets_targets"] = {column: summary[column]["lowest"] >= LABEL_TARGET
                                and summary[column]["mean"] >= MEAN_TARGET for column in ("min", "pooled")}
    return {"labels": rows, "summary": summary}


def case_mean_dsc(row: dict) -> float:
    """Mean DSC over the 13 organs of one official CSV row (NaN values, the official off-by-one on
    one-slice tubes, left out)."""
    from flare.labels import ORGANS
    values = [row[f"{o.short}_DSC"] for o in ORGANS]
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def committed_scores(model_dir: Path, case_ids: list[str]) -> dict[str, float]:
    """Mean DSC of these cases in the model folder's heldout_scores.csv, where it has them."""
    path = model_dir / "heldout_scores.csv"
    if not path.is_file():
        return {}
    with path.open() as f:
        rows = {r["Name"].removesuffix(".nii.gz"): r for r in csv.DictReader(f)}
    return {c: case_mean_dsc({k: float(v) for k, v in rows[c].items() if k != "Name"})
            for c in case_ids if c in rows}


# --- running the paths ------------------------------------------------------------------------------

def run_path(spec: PathSpec, model_dir: Path, device: str, roi: bool, images: Path, pred: Path,
             quiet: bool) -> dict:
    """Load the path's model once and segment every case into `pred`; returns what was run and how
    long each case took (seconds, stage sum) and which cases failed."""
    from inference.api import segment_folder
    from inference.loading import load_model
    t0 = time.perf_counter()
    model = load_model(model_dir, device=device, roi=roi, **spec.options)
    load_s = time.perf_counter() - t0
    plan = model.plan.describe()
    if not quiet:
        print(f"{spec.title}: {plan} on {model.device} (loaded in {load_s:.1f} s)", flush=True)
    seconds, failed = {}, {}

    def report(result):
        if result.ok:
            seconds[result.case] = round(sum(result.timings.values()), 3)
        else:
            failed[result.case] = result.error
            print(f"error: {spec.key}: {result.case}: {result.error}", file=sys.stderr, flush=True)
        if not quiet and result.ok:
            print(f"  {spec.key} {result.case}: {seconds[result.case]:.1f} s (load {load_average()})", flush=True)

    segment_folder(images, pred, model=model, on_result=report)
    return {"title": spec.title, "options": spec.options, "plan": plan, "device": str(model.device),
            "load_seconds": round(load_s, 3), "case_seconds": seconds, "failed": failed}


def compare(paths: dict, preds: dict[str, Path], labels_dir: Path, case_ids: list[str],
            label_ids: list[int]) -> dict:
    """Agreement of every path with the reference, and every path's DSC against the truth."""
    from evaluation.folder import score_case
    from evaluation.masks import read_label_map
    truth = {}
    for key in paths:
        truth[key] = {}
        for case in case_ids:
            file = preds[key] / f"{case}.nii.gz"
            if file.is_file():
                truth[key][case] = case_mean_dsc(score_case(file, labels_dir / f"{case}.nii.gz"))
    agreement = {}
    for key in paths:
        if key == REFERENCE.key:
            continue
        overlaps, voxels = {}, {}
        for case in case_ids:
            a, b = preds[key] / f"{case}.nii.gz", preds[REFERENCE.key] / f"{case}.nii.gz"
            if a.is_file() and b.is_file():
                ma, mb = read_label_map(a).array, read_label_map(b).array
                overlaps[case] = label_overlaps(ma, mb, label_ids)
                voxels[case] = int(np.count_nonzero(ma != mb))
        if overlaps:
            agreement[key] = {**agreement_table(overlaps, label_ids), "cases": sorted(overlaps),
                              "voxels_differing": voxels,
                              "case_mean_dice": {c: float(np.mean([dice_from_counts(*ov[l]) for l in label_ids]))
                                                 for c, ov in overlaps.items()}}
    means = {}
    common = [c for c in case_ids if all(c in truth[k] for k in paths)]   # every path on the same cases
    for key in paths:
        means[key] = 100 * float(np.mean([truth[key][c] for c in common])) if common else float("nan")
    difference = {k: means[k] - means[REFERENCE.key] for k in paths if k != REFERENCE.key}
    return {"agreement": agreement, "truth_case_dsc": truth, "truth_cases": common,
            "truth_mean_dsc_percent": means, "truth_difference_points": difference,
            "truth_within_target": {k: abs(d) <= TRUTH_TARGET_POINTS for k, d in difference.items()}}


# --- the report -------------------------------------------------------------------------------------

def _yes(ok: bool) -> str:
    return "**yes**" if ok else "**NO**"


def format_report(r: dict) -> str:
    label_names = {int(k): v for k, v in r["label_names"].items()}
    compared = [k for k in r["paths"] if k != REFERENCE.key and k in r["agreement"]]
    lines = [f"# Path agreement on held-out phantoms ({'with' if r['roi'] else 'without'} ROI)", "",
             "Packages: " + ", ".join(f"{k} {v}" for k, v in r["packages"].items()), "",
             f"Model: `{r['model']}`; cases: {len(r['cases'])} held-out phantoms ({', '.join(r['cases'])}), "
             f"generated by training.data (phantoms.generate_case) with subject seeds from "
             f"{r['heldout']['first_seed']}, modalities {r['heldout']['modalities']}, grid family "
             f"{r['heldout']['grid_families']} (from {r['heldout']['source']}).", "",
             "## Paths", "",
             "| path | resolved | device | load s | mean s per case | failed |", "|---|---|---|---:|---:|---:|"]
    for key, p in r["paths"].items():
        secs = list(p["case_seconds"].values())
        lines.append(f"| {p['title']} | {p['plan']} | {p['device']} | {p['load_seconds']:.1f} | "
                     f"{np.mean(secs) if secs else float('nan'):.1f} | {len(p['failed'])} |")
    lines += ["", r["bf16_note"], ""]
    if compared:
        lines += ["## Dice between paths, per label (against (b), the exact path)", "",
                  "A label absent from both maps of a case counts as Dice 1. Min: the lowest case; pooled: "
                  "the voxels of all cases together.", ""]
        head = "| label |" + "".join(f" {k} min | {k} pooled |" for k in compared)
        lines += [head, "|---|" + "---:|---:|" * len(compared)]
        for label, name in label_names.items():
            cells = "".join(f" {r['agreement'][k]['labels'][label]['min']:.4f} | "
                            f"{r['agreement'][k]['labels'][label]['pooled']:.4f} |" for k in compared)
            lines.append(f"| {label} {name} |{cells}")
        for what, field in (("lowest label", "lowest"), ("mean over labels", "mean")):
            cells = ""
            for k in compared:
                s = r["agreement"][k]["summary"]
                for column in ("min", "pooled"):
                    where = f" ({label_names[s[column]['lowest_label']]})" if field == "lowest" else ""
                    cells += f" **{s[column][field]:.4f}**{where} |"
            lines.append(f"| **{what}** |{cells}")
        lines += ["", f"Targets: every label >= {LABEL_TARGET}, mean >= {MEAN_TARGET}.", ""]
        for k in compared:
            met = r["agreement"][k]["summary"]["meets_targets"]
            lines.append(f"- {r['paths'][k]['title']}: met on the per-case minimum {_yes(met['min'])}, "
                         f"on the pooled Dice {_yes(met['pooled'])}")
        lines.append("")
    lines += ["## Mean DSC against the truth (FLARE rules, evaluation.folder.score_case)", "",
              f"Over the {len(r['truth_cases'])} cases every path predicted; target: within "
              f"{TRUTH_TARGET_POINTS} points of (b).", "",
              "| path | mean DSC % | difference to (b), points | within target |", "|---|---:|---:|---|"]
    for key, p in r["paths"].items():
        diff = r["truth_difference_points"].get(key)
        lines.append(f"| {p['title']} | {r['truth_mean_dsc_percent'][key]:.2f} | "
                     f"{'-' if diff is None else f'{diff:+.2f}'} | "
                     f"{'-' if diff is None else _yes(r['truth_within_target'][key])} |")
    if r["committed_mean_dsc_percent"] is not None:
        lines += ["", f"The same cases in the model's heldout_scores.csv (its training-time evaluation): mean DSC "
                      f"{r['committed_mean_dsc_percent']:.2f} %."]
    lines += ["", "## Per case", "",
              "| case |" + "".join(f" {k}: voxels differing | {k}: mean Dice |" for k in compared)
              + "".join(f" DSC {k} % |" for k in r["paths"]),
              "|---|" + "---:|---:|" * len(compared) + "---:|" * len(r["paths"])]
    for case in r["cases"]:
        cells = ""
        for k in compared:
            a = r["agreement"][k]
            cells += (f" {a['voxels_differing'][case]} | {a['case_mean_dice'][case]:.4f} |"
                      if case in a["voxels_differing"] else " - | - |")
        for k in r["paths"]:
            v = r["truth_case_dsc"][k].get(case)
            cells += f" {'-' if v is None else f'{100 * v:.2f}'} |"
        lines.append(f"| {case} |{cells}")
    return "\n".join(lines) + "\n"


# --- the command ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.studies.path_agreement",
        description="Dice between the default network path (and bf16 where the CPU has it) and the exact "
                    "torch fp32 path, and each path's DSC against the truth, on held-out phantoms.",
        epilog="Writes path_agreement.md and .json into benchmarks/results/path_agreement/<machine>/ "
               "(its no_roi/ folder with --no-roi). Run it under flock /tmp/flare-measure.lock.")
    parser.add_argument("-m", "--model", type=Path, default=DEFAULT_MODEL,
                        help="trained model folder (default: the repository's weights/)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="results folder for the report (default benchmarks/results/path_agreement/<machine>"
                             "[/no_roi])")
    parser.add_argument("--cases", type=int, default=8, help="the first N held-out phantoms (default 8)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the phantoms and predictions, kept (default: a temporary folder, "
                             "removed at the end)")
    parser.add_argument("--no-roi", action="store_true", help="whole-image paths (the localiser not loaded)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="device of every path (default auto: CUDA when available)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-case progress lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.cases < 1:
        print(f"error: --cases must be >= 1, got {args.cases}", file=sys.stderr)
        return 2
    if not args.model.is_dir():
        print(f"error: {args.model}: model folder not found", file=sys.stderr)
        return 2
    from inference.device import device_type
    kind = device_type(args.device)
    work = args.work or Path(tempfile.mkdtemp(prefix="path_agreement_"))
    try:
        return _run(args, kind, work)
    except InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def _run(args, kind: str, work: Path) -> int:
    load_before = load_average()
    settings = heldout_settings(args.model)
    cases = write_heldout_cases(work, args.cases, settings, args.quiet)
    case_ids = [c.case_id for c in cases]
    bf16_ok, bf16_note = bf16_status(kind)
    print(bf16_note, flush=True)
    # on a CPU with native bf16 the default is bf16 already: its float32 twin shows what bf16 saves
    specs = [DEFAULT, REFERENCE] + ([] if not bf16_ok else [FP32] if kind == "cpu" else [BF16])
    paths, preds = {}, {}
    for spec in specs:
        preds[spec.key] = work / ("pred_noroi" if args.no_roi else "pred") / spec.key
        shutil.rmtree(preds[spec.key], ignore_errors=True)   # predictions always fresh; the phantoms are kept
        paths[spec.key] = run_path(spec, args.model, args.device, not args.no_roi, work / "imagesTs",
                                   preds[spec.key], args.quiet)
    from inference.model.folder import parse_labels
    dataset_json = args.model / "dataset.json"
    labels = parse_labels(json.loads(dataset_json.read_text()), dataset_json)
    label_names = {v: k for k, v in labels.items() if v != 0}
    result = compare(paths, preds, work / "labelsTs", case_ids, sorted(label_names))
    committed = committed_scores(args.model, result["truth_cases"])
    report = {
        "metadata": run_metadata(command_line("benchmarks.studies.path_agreement", args.argv), load_before=load_before),
        "packages": package_versions(), "model": str(args.model), "roi": not args.no_roi,
        "heldout": settings, "cases": case_ids, "bf16_note": bf16_note,
        "label_names": label_names, "paths": paths, **result,
        "committed_mean_dsc_percent": 100 * float(np.mean(list(committed.values()))) if committed else None,
        "targets": {"label": LABEL_TARGET, "mean": MEAN_TARGET, "truth_points": TRUTH_TARGET_POINTS},
    }
    out = args.output or results_dir("path_agreement", *(["no_roi"] if args.no_roi else []))
    text = metadata_markdown(report["metadata"]) + "\n" + format_report(report)
    write_json(out / "path_agreement.json", report)
    write_text(out / "path_agreement.md", text)
    if not args.quiet:
        print(text)
    print(f"wrote {out}/path_agreement.md and .json", flush=True)
    return 1 if any(p["failed"] for p in paths.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
