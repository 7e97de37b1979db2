"""ROI-first prediction measured: without the localiser, with it (the default tile grid), and with the box
grid (`--roi-grid box`), on large-field phantoms, held-out sample-like phantoms, samples/ and the compare case.

    flock /tmp/flare-measure.lock python -m benchmarks.studies.roi [-m weights] [--cases 4] [--work /tmp/roi_bench]

1. Held-out large-field phantoms (chest to pelvis, much air: phantoms' field="large", grids drawn from
   the MRI presets, subject seeds --seed ...; never used in training) and the model's first --heldout
   held-out phantoms (sample-like abdominal slabs) are written to --work once (skipped when present;
   `--prepare` writes them and stops, outside the measurement lock).
2. Each case runs three times, in a fresh process each (so that peak memory is the case's own): with
   --no-roi, with ROI (the whole image's tiles that meet the box; the localiser is not run where no box
   could spare one, inference.roi.box_could_spare_tiles) and with ROI on a box grid.
   Recorded: the stage timings of `inference.api.segment_case` (their sum is the case's wall time,
   start-up excluded), the process's own peak RSS (VmHWM), the number of full-model tiles (the sliding
   window's progress callback; the localiser's tiles are not counted), and what the localiser decided.
3. Predictions are scored with `evaluation` (FLARE DSC/NSD) against the phantoms' truth, and each ROI
   mode's labels against the no-ROI labels (the lowest per-label Dice over labels of >= 1,000 voxels).
4. The compare case of benchmarks.studies.compare_nnunet (a T1 phantom on Table 6's amos_0507 grid, 320x290x72 at
   1.25x1.25x3.47 mm, abdominal slab with the aorta, IVC and oesophagus through all 72 slices) is
   measured the same way (set "compare"), with per-organ DSC in the JSON.
5. The paper's architecture (testsupport.model_folder.PAPER: patch 40x192x224 at 2.5x0.78x0.78 mm), with
   the model folder's localiser: full-model tiles without ROI and with each ROI grid on the large
   fields, counted from the tile grid (the network itself is not run; tile counts carry over to a GPU).
A markdown table and the raw JSON go to --output (default benchmarks/results/), named after the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import (REPO, command_line, cpu_description, list_image_cases, load_average, metadata_markdown,
                               own_memory_mb, results_dir, run_metadata, write_json, write_text)

HELDOUT_MODALITIES = ("t1", "t2", "t1c", "dwi")
SETS = ("large", "heldout", "samples", "compare")


# --- data -------------------------------------------------------------------------------------------

def prepare_large(work: Path, n: int, seed: int) -> Path:
    """work/large/imagesTs, labelsTs: n large-field MRI phantoms (skipped when present)."""
    from phantoms.dataset import write_case
    root = work / "large"
    for i in range(n):
        modality = HELDOUT_MODALITIES[i % len(HELDOUT_MODALITIES)]
        case = f"large_{seed + i:06d}_{modality}"
        if (root / "imagesTs" / f"{case}_0000.nii.gz").is_file() and (root / "labelsTs" / f"{case}.nii.gz").is_file():
            continue
        t0 = time.time()
        write_case(str(root), case, seed + i, modality, "Ts", field="large")
        print(f"  wrote {case} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return root


# --- one measured run (worker process) ----------------------------------------------------------------

MODES = ("plain", "roi", "box")    # --no-roi; ROI on the whole image's tile grid (default); ROI on a box grid
MODE_NAMES = {"plain": "no ROI", "roi": "ROI", "box": "box grid"}


def worker(image: Path, out_dir: Path, model_dir: Path, mode: str, device: str, result_json: Path) -> None:
    """Segment one case (as the CLI does) in `mode` (MODES), write timings, tiles and the localiser's decision."""
    from inference.api import segment_case
    from inference.device import resolve_device
    from inference.files.cases import Case
    from inference.files.reading import read_case
    from inference.loading import load_model
    from inference.roi import RoiSettings

    roi = mode != "plain"
    model = load_model(model_dir, device=resolve_device(device))
    has_localizer = model.localizer is not None
    if not roi:
        model.localizer = None
    tiles = {"n": 0}

    def count(done: int, total: int) -> None:
        tiles["n"] += 1
    case_id = image.name[: -len("_0000.nii.gz")]
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = segment_case(Case(case_id, [image]), out_dir, model, progress=count,
                          roi_settings=RoiSettings(grid="box" if mode == "box" else "whole"))
    wall = time.perf_counter() - t0
    peak_mb = own_memory_mb()[1]      # before the decision below reads the case again
    decision = None
    if roi and has_localizer:   # after the timed run: what the localiser decided (not timed)
        from inference.roi import box_could_spare_tiles, decide_box
        volume = read_case(Case(case_id, [image]))
        direction = volume.reference.GetDirection()
        d = decide_box(volume.data, volume.spacing, model, direction=direction)
        decision = {"reason": d.reason, "fraction": round(d.fraction, 4), "foreground_ml": round(d.foreground_ml, 1),
                    "box": [[s.start, s.stop] for s in d.box] if d.box else None,
                    # whether the run used it: the default grid skips it where no box spares a tile
                    "localizer_run": mode == "box" or box_could_spare_tiles(volume.data, volume.spacing, model,
                                                                            direction)}
    result_json.write_text(json.dumps({"case": case_id, "ok": result.ok, "error": result.error,
                                       "timings": result.timings, "seconds": wall, "tiles": tiles["n"],
                                       "peak_rss_gb": peak_mb / 1024, "decision": decision}, indent=2))


def run_measured(image: Path, out_dir: Path, model_dir: Path, mode: str, device: str, tmp: Path) -> dict:
    """The worker in a fresh process; returns its record plus peak RSS (GB) and the load average."""
    result_json = tmp / f"{image.name}.{mode}.json"
    cmd = [sys.executable, "-m", "benchmarks.studies.roi", "--worker", str(image), str(out_dir), str(model_dir),
           mode, device, str(result_json)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    load_before = load_average()[0]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO)
    status = proc.wait()
    if status != 0:
        raise SystemExit(f"error: worker failed for {image} ({mode}), status {status}")
    record = json.loads(result_json.read_text())
    record["load"] = [load_before, load_average()[0]]
    if not record["ok"]:
        raise SystemExit(f"error: {image}: {record['error']}")
    return record


def prepare_heldout(work: Path, model_dir: Path, n: int) -> Path:
    """work/heldout/imagesTs, labelsTs: the model's first n held-out phantoms (sample-like abdominal slabs,
    the same as benchmarks.studies.path_agreement's; kept when present)."""
    from benchmarks.studies.path_agreement import heldout_settings, write_heldout_cases
    root = work / "heldout"
    write_heldout_cases(root, n, heldout_settings(model_dir), quiet=True)
    return root


def prepare_compare(work: Path) -> Path:
    """work/compare/imagesTs, labelsTs: benchmarks.studies.compare_nnunet's phantom case (kept when present)."""
    from benchmarks.studies.compare_nnunet import write_phantom_case
    root = work / "compare"
    (root / "imagesTs").mkdir(parents=True, exist_ok=True)
    (root / "labelsTs").mkdir(parents=True, exist_ok=True)
    write_phantom_case(root / "imagesTs", root / "labelsTs")
    return root


def score(pred: Path, labels: Path) -> dict[str, tuple[float, float, dict[str, float]]]:
    """case -> (mean DSC, mean NSD, DSC per organ) over the 13 organs, FLARE rules (python -m evaluation)."""
    from evaluation.folder import score_folder
    from flare.labels import ORGANS
    scored = score_folder(pred, labels)
    if scored.errors or scored.missing:
        raise SystemExit(f"error: scoring {pred}: missing {scored.missing}, errors {scored.errors}")
    out = {}
    for row in scored.rows:
        name = row["Name"].removesuffix(".nii.gz")
        out[name] = (sum(row[f"{o.short}_DSC"] for o in ORGANS) / len(ORGANS),
                     sum(row[f"{o.short}_NSD"] for o in ORGANS) / len(ORGANS),
                     {o.short: row[f"{o.short}_DSC"] for o in ORGANS})
    return out


# --- the paper's architecture: tile counts -------------------------------------------------------------

def paper_tiles(image: Path, localizer) -> dict:
    """Full-model tiles of the paper's architecture on this image, whole image vs the ROI box."""
    from types import SimpleNamespace

    import numpy as np

    from testsupport.model_folder import PAPER
    from inference.files.cases import Case
    from inference.files.reading import read_case
    from inference.roi import decide_box
    from inference.rules.preprocessing import nonzero_bbox
    from inference.rules.region import network_region
    from inference.rules.spacing import new_shape_for_spacing
    from inference.rules.tiling import tiles_meeting

    paper = SimpleNamespace(config=SimpleNamespace(patch_size=PAPER.patch_size, spacing=PAPER.spacing),
                            transpose_forward=(0, 1, 2), localizer=localizer)
    volume = read_case(Case(image.name[: -len("_0000.nii.gz")], [image]))
    bbox = nonzero_bbox((np.asarray(volume.data) != 0).any(0))
    shape = new_shape_for_spacing([b - a for a, b in bbox], volume.spacing, PAPER.spacing)

    def tiles(box=None, grid: str = "whole") -> int:
        """The tiles the predictor runs: the whole image's, or for the box those of `grid`."""
        region = None if box is None else network_region(box, (0, 1, 2), bbox, shape)
        if box is not None and region is None:
            return 0
        return tiles_meeting(shape, PAPER.patch_size, 0.5, region and region.network, grid)
    decision = decide_box(volume.data, volume.spacing, paper, direction=volume.reference.GetDirection())
    whole = tiles()
    boxed = tiles(decision.box) if decision.box else whole
    box_grid = tiles(decision.box, "box") if decision.box else whole
    return {"whole": whole, "roi": boxed, "box": box_grid, "reason": decision.reason,
            "fraction": round(decision.fraction, 4)}


# --- main -----------------------------------------------------------------------------------------------

def label_agreement(reference: Path, other: Path, min_voxels: int = 1000) -> dict:
    """The lowest per-label Dice of `other` against `reference` (two label files on one grid), over the
    labels with at least `min_voxels` voxels in the reference (the issue's gate)."""
    import numpy as np
    import SimpleITK as sitk
    from flare.labels import ORGANS
    # copies (GetArrayFromImage): a view would outlive its temporary image
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(reference))).ravel().astype(np.int64)
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(other))).ravel().astype(np.int64)
    size = int(max(a.max(initial=0), b.max(initial=0))) + 1
    both = np.bincount(a[a == b], minlength=size)
    count_a, count_b = np.bincount(a, minlength=size), np.bincount(b, minlength=size)
    names = {o.label: o.short for o in ORGANS}
    dices = {names.get(k, str(k)): 2 * both[k] / (count_a[k] + count_b[k])
             for k in range(1, size) if count_a[k] >= min_voxels}
    worst = min(dices, key=dices.get) if dices else None
    return {"worst_label": worst, "worst_dice": float(dices[worst]) if worst else 1.0, "labels": len(dices)}


def measure_set(name: str, images: Path, labels: Path, model_dir: Path, device: str, work: Path,
                localizer) -> list[dict]:
    """Every case of a set in each mode (MODES, interleaved per case), scored against the truth and
    against the no-ROI labels; one row per case with keys <mode>_s, <mode>_tiles, <mode>_dsc, ..."""
    import shutil
    cases = [files[0] for files in list_image_cases(images).values()]
    preds = {mode: work / "pred" / name / mode for mode in MODES}
    for pred in preds.values():
        shutil.rmtree(pred, ignore_errors=True)
    records = {}
    for image in cases:
        for mode in MODES:     # plain first: a cold cache, if any, penalises the baseline
            rec = records[(image.name, mode)] = run_measured(image, preds[mode], model_dir, mode, device, work)
            print(f"  {name} {rec['case']} {mode}: {sum(rec['timings'].values()):.2f} s, "
                  f"{rec['tiles']} tiles, {rec['peak_rss_gb']:.2f} GB, load {rec['load']}", file=sys.stderr,
                  flush=True)
    scores = {mode: score(preds[mode], labels) for mode in MODES}
    rows = []
    for image in cases:
        case = records[(image.name, "plain")]["case"]
        row = {"set": name, "case": case, "decision": records[(image.name, "roi")]["decision"], "load": []}
        for mode in MODES:
            rec = records[(image.name, mode)]
            row.update({f"{mode}_s": sum(rec["timings"].values()), f"{mode}_gb": rec["peak_rss_gb"],
                        f"{mode}_tiles": rec["tiles"], f"{mode}_dsc": scores[mode][case][0],
                        f"{mode}_nsd": scores[mode][case][1], f"{mode}_organ_dsc": scores[mode][case][2],
                        f"{mode}_timings": rec["timings"]})
            row["load"] += rec["load"]
            if mode != "plain":
                row[f"{mode}_agreement"] = label_agreement(preds["plain"] / f"{case}.nii.gz",
                                                           preds[mode] / f"{case}.nii.gz")
        row["localize_s"] = row["roi_timings"].get("localize", 0.0)
        if localizer is not None and name == "large":
            row["paper_tiles"] = paper_tiles(image, localizer)
        rows.append(row)
    return rows


TIMED = ("time (s)", "ratio", "load avg")     # the column groups an untimed run leaves out


def _columns(r: dict, total: bool = False) -> dict[str, str]:
    """The table's cells for one row (or a set's sum: total) keyed by column group."""
    modes = [m for m in MODES if f"{m}_s" in r]
    sep = " / "
    cells = {"time (s)": sep.join(f"{r[f'{m}_s']:.2f}" for m in modes),
             "localize (s)": f"{r['localize_s']:.2f}",
             "ratio": sep.join(f"{r[f'{m}_s'] / r['plain_s']:.2f}" for m in modes[1:]),
             "tiles": sep.join(str(r[f"{m}_tiles"]) for m in modes),
             "DSC": sep.join(f"{100 * r[f'{m}_dsc']:.{2 if total else 1}f}" for m in modes),
             "NSD": sep.join(f"{100 * r[f'{m}_nsd']:.{2 if total else 1}f}" for m in modes),
             "worst label Dice vs no ROI": sep.join(
                 f"{r[f'{m}_agreement']['worst_dice']:.3f}" + ("" if total else f" ({r[f'{m}_agreement']['worst_label']})")
                 for m in modes[1:] if f"{m}_agreement" in r),
             "peak RSS (GB)": f"{max(r[f'{m}_gb'] for m in modes):.2f}",
             "load avg": " ".join(f"{x:.1f}" for x in r.get("load", []))}
    return cells


def set_total(sub: list[dict]) -> dict:
    """A set's row of sums (times, tiles), means (DSC, NSD), minima (agreement) and maxima (memory)."""
    n, total = len(sub), {"localize_s": sum(r["localize_s"] for r in sub)}
    for m in MODES:
        if f"{m}_s" not in sub[0]:
            continue
        total.update({f"{m}_s": sum(r[f"{m}_s"] for r in sub), f"{m}_tiles": sum(r[f"{m}_tiles"] for r in sub),
                      f"{m}_dsc": sum(r[f"{m}_dsc"] for r in sub) / n, f"{m}_nsd": sum(r[f"{m}_nsd"] for r in sub) / n,
                      f"{m}_gb": max(r[f"{m}_gb"] for r in sub)})
        if f"{m}_agreement" in sub[0]:
            total[f"{m}_agreement"] = min((r[f"{m}_agreement"] for r in sub), key=lambda a: a["worst_dice"])
    return total


def markdown(rows: list[dict], header: str, timed: bool = True) -> str:
    groups = [g for g in ("time (s)", "localize (s)", "ratio", "tiles", "DSC", "NSD", "worst label Dice vs no ROI",
                          "peak RSS (GB)", "load avg") if timed or g not in TIMED + ("localize (s)",)]
    order = " / ".join(MODE_NAMES[m] for m in MODES)
    lines = [header, "", f"Each group of numbers is {order} (ratio and agreement: {' / '.join(MODE_NAMES[m] for m in MODES[1:])}).",
             "", "| set | case | box % | " + " | ".join(groups) + " |", "|" + "---|" * (len(groups) + 3)]
    for r in rows:
        d = r["decision"] or {}
        box = f"{100 * d['fraction']:.0f}" if d.get("box") else f"whole ({d.get('reason', '-')})"
        if d and not d.get("localizer_run", True):
            box += "; localiser not run"
        cells = _columns(r)
        lines.append(f"| {r['set']} | {r['case']} | {box} | " + " | ".join(cells[g] for g in groups) + " |")
    for name in sorted({r["set"] for r in rows}):
        sub = [r for r in rows if r["set"] == name]
        cells = _columns(set_total(sub), total=True)
        lines.append(f"| **{name} (all {len(sub)})** | | | " + " | ".join(
            f"**{cells[g]}**" if g in ("time (s)", "ratio", "DSC") and cells[g] else cells[g] for g in groups) + " |")
    for r in rows:
        if r["set"] == "compare" and "plain_organ_dsc" in r:
            d = r["decision"] or {}
            lines += ["", f"Per-organ DSC on the compare case {r['case']} (box {d.get('box')}, input axes Z, Y, X):",
                      "", f"| organ | {' | '.join('DSC ' + MODE_NAMES[m] for m in MODES)} |", "|---|---|---|---|"]
            lines += [f"| {k} | " + " | ".join(f"{100 * r[f'{m}_organ_dsc'][k]:.1f}" for m in MODES) + " |"
                      for k in r["plain_organ_dsc"]]
    paper = [r for r in rows if "paper_tiles" in r]
    if paper:
        lines += ["", "The paper's architecture (patch 40x192x224 at 2.5x0.78x0.78 mm, random weights; the "
                      "same localiser), full-model tiles on the same large-field phantoms:", "",
                  "| case | tiles whole image | tiles ROI (whole grid) | tiles ROI (box grid) | box % |",
                  "|---|---|---|---|---|"]
        for r in paper:
            p = r["paper_tiles"]
            lines.append(f"| {r['case']} | {p['whole']} | {p['roi']} | {p['box']} | {100 * p['fraction']:.0f} ({p['reason']}) |")
        tw, tr, tb = (sum(r["paper_tiles"][k] for r in paper) for k in ("whole", "roi", "box"))
        lines.append(f"| **all** | **{tw}** | **{tr} ({tr / tw:.2f})** | **{tb} ({tb / tw:.2f})** | |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.roi", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("-m", "--model", type=Path, default=REPO / "weights", help="model folder with localizer/")
    ap.add_argument("-o", "--output", type=Path, default=None,
                    help="results folder (default benchmarks/results/roi/<machine>[/<variant>])")
    ap.add_argument("--work", type=Path, default=Path("/tmp/roi_bench"), help="phantoms and predictions")
    ap.add_argument("--cases", type=int, default=4, help="held-out large-field phantoms (default 4)")
    ap.add_argument("--seed", type=int, default=910000, help="their first subject seed (default 910000)")
    ap.add_argument("--no-samples", action="store_true", help="skip samples/")
    ap.add_argument("--heldout", type=int, default=8,
                    help="held-out sample-like phantoms (the model's held-out evaluation cases; default 8)")
    ap.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS),
                    help="which sets to measure (default all: large-field phantoms, held-out sample-like "
                         "phantoms, samples/, the compare case)")
    ap.add_argument("--prepare", action="store_true", help="only write the phantoms (no measurement)")
    ap.add_argument("--untimed", action="store_true",
                    help="outside the measurement lock: write only boxes, tiles, peak memory and DSC/NSD "
                         "(variant folder untimed/), no times")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="device (auto: cuda when available; the committed table ran on the CPU)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        image, out_dir, model_dir, mode, device, result_json = argv[1:7]
        worker(Path(image), Path(out_dir), Path(model_dir), mode, device, Path(result_json))
        return 0
    ap = build_parser()
    args = ap.parse_args(argv)
    load_before = load_average()

    from inference.loading import load_model
    from training.data import check_disjoint, sample_seeds
    if {args.seed + i for i in range(args.cases)} & (sample_seeds() | set(range(100000, 100100))
                                                     | set(range(900000, 900100))):
        ap.error("--seed range overlaps the training, held-out or sample subjects")
    del check_disjoint
    args.work.mkdir(parents=True, exist_ok=True)
    large = prepare_large(args.work, args.cases, args.seed) if "large" in args.sets else None
    heldout = prepare_heldout(args.work, args.model, args.heldout) if "heldout" in args.sets else None
    compare = prepare_compare(args.work) if "compare" in args.sets else None
    if args.prepare:
        return 0
    model = load_model(args.model)
    if model.localizer is None:
        ap.error(f"{args.model} has no localizer/; nothing to compare")
    rows = []
    if large is not None:
        rows += measure_set("large", large / "imagesTs", large / "labelsTs", args.model, args.device, args.work,
                            model.localizer)
    if heldout is not None:
        rows += measure_set("heldout", heldout / "imagesTs", heldout / "labelsTs", args.model, args.device,
                            args.work, None)
    if "samples" in args.sets and not args.no_samples:
        rows += measure_set("samples", REPO / "samples" / "inputs", REPO / "samples" / "labels", args.model,
                            args.device, args.work, None)
    if compare is not None:
        rows += measure_set("compare", compare / "imagesTs", compare / "labelsTs", args.model, args.device,
                            args.work, None)
    meta = run_metadata(command_line("benchmarks.studies.roi", argv), load_before=load_before)
    header = (f"# ROI-first prediction: with and without the localiser\n\n{metadata_markdown(meta)}\n"
              f"{cpu_description()}, device {args.device}; model {args.model.name}/ (localiser "
              f"{list(model.localizer.config.spacing)} mm). Time: sum of the case's stages (read, localize, "
              f"preprocess, network, export, write; start-up excluded), each mode in a fresh process; peak RSS "
              f"of that process. Load average (1 min) before/after each mode's run in the last column "
              f"(the machine is shared). Modes: no ROI (`--no-roi`), ROI (the default: the whole image's tiles "
              f"that meet the box), box grid (`--roi-grid box`: a tile grid over the box). Worst label Dice vs "
              f"no ROI: the lowest Dice of a label with >= 1,000 voxels in the no-ROI labels.")
    subset = [] if set(args.sets) == set(SETS) and not args.no_samples \
        else ["_".join(s for s in SETS if s in args.sets and not (s == "samples" and args.no_samples))]
    variant = (["untimed"] if args.untimed else []) + subset
    stem = (args.output or results_dir("roi", *variant)) / "roi"
    if args.untimed:
        header = header.replace("Time: sum of", "Times not recorded (run outside the measurement lock; "
                                "they would be meaningless). Time would be: sum of")
    text = markdown(rows, header, timed=not args.untimed)
    if args.untimed:
        for r in rows:
            for k in ("localize_s", "load", *(f"{m}_{t}" for m in MODES for t in ("s", "timings"))):
                r.pop(k, None)
    write_text(stem.with_suffix(".md"), text)
    write_json(stem.with_suffix(".json"), {"metadata": meta, "rows": rows})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
