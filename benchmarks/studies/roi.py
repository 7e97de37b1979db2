"""ROI-first prediction measured: with and without the localiser, on large-field phantoms and samples/.

    flock /tmp/flare-measure.lock python -m benchmarks.studies.roi [-m weights] [--cases 4] [--work /tmp/roi_bench]

1. Held-out large-field phantoms (chest to pelvis, much air: phantoms' field="large", grids drawn from
   the MRI presets, subject seeds --seed ...; never used in training) are written to --work once
   (skipped when present; `--prepare` writes them and stops, outside the measurement lock).
2. Each case runs twice, in a fresh process each (so that peak memory is the case's own): with ROI
   and with --no-roi. Recorded: the stage timings of `inference.api.segment_case` (their sum is the
   case's wall time, start-up excluded), the process's peak RSS (os.wait4), the number of full-model
   tiles (the sliding window's progress callback; the localiser's tiles are not counted), and what
   the localiser decided.
3. Predictions are scored with `evaluation` (FLARE DSC/NSD) against the phantoms' truth.
4. The compare case of benchmarks.studies.compare_nnunet (a T1 phantom on Table 6's amos_0507 grid, 320x290x72 at
   1.25x1.25x3.47 mm, abdominal slab with the aorta, IVC and oesophagus through all 72 slices) is
   measured the same way (set "compare"), with per-organ DSC in the JSON.
5. The paper's architecture (testsupport.model_folder.PAPER: patch 40x192x224 at 2.5x0.78x0.78 mm), with
   the model folder's localiser: full-model tiles with and without ROI on the same phantoms, counted
   from the tile grid (the network itself is not run; tile counts carry over to a GPU).
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

from benchmarks.common import (REPO, command_line, cpu_description, list_image_cases, load_average, metadata_markdown, results_dir,
                               run_metadata, write_json, write_text)

HELDOUT_MODALITIES = ("t1", "t2", "t1c", "dwi")


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

def worker(image: Path, out_dir: Path, model_dir: Path, roi: bool, device: str, result_json: Path) -> None:
    """Segment one case (as the CLI does), write timings, tiles and the localiser's decision."""
    from inference.api import segment_case
    from inference.device import resolve_device
    from inference.files.cases import Case
    from inference.files.reading import read_case
    from inference.loading import load_model

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
    result = segment_case(Case(case_id, [image]), out_dir, model, progress=count)
    wall = time.perf_counter() - t0
    decision = None
    if roi and has_localizer:   # after the timed run: what the localiser decided (not timed)
        from inference.roi import decide_box
        volume = read_case(Case(case_id, [image]))
        d = decide_box(volume.data, volume.spacing, model, direction=volume.reference.GetDirection())
        decision = {"reason": d.reason, "fraction": round(d.fraction, 4), "foreground_ml": round(d.foreground_ml, 1),
                    "box": [[s.start, s.stop] for s in d.box] if d.box else None}
    result_json.write_text(json.dumps({"case": case_id, "ok": result.ok, "error": result.error,
                                       "timings": result.timings, "seconds": wall, "tiles": tiles["n"],
                                       "decision": decision}, indent=2))


def run_measured(image: Path, out_dir: Path, model_dir: Path, roi: bool, device: str, tmp: Path) -> dict:
    """The worker in a fresh process; returns its record plus peak RSS (GB) and the load average."""
    result_json = tmp / f"{image.name}.{'roi' if roi else 'plain'}.json"
    cmd = [sys.executable, "-m", "benchmarks.studies.roi", "--worker", str(image), str(out_dir), str(model_dir),
           "roi" if roi else "plain", device, str(result_json)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    load_before = load_average()[0]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"error: worker failed for {image} ({'roi' if roi else 'plain'}), status {status}")
    record = json.loads(result_json.read_text())
    record["peak_rss_gb"] = usage.ru_maxrss / 1024 ** 2          # ru_maxrss is in KiB on Linux
    record["load"] = [load_before, load_average()[0]]
    if not record["ok"]:
        raise SystemExit(f"error: {image}: {record['error']}")
    return record


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

    def tiles(box=None) -> int:
        """The whole image's tiles (ROI: those that meet the box, as the predictor runs them)."""
        region = None if box is None else network_region(box, (0, 1, 2), bbox, shape)
        if box is not None and region is None:
            return 0
        return tiles_meeting(shape, PAPER.patch_size, 0.5, region and region.network)
    decision = decide_box(volume.data, volume.spacing, paper, direction=volume.reference.GetDirection())
    whole = tiles()
    boxed = tiles(decision.box) if decision.box else whole
    return {"whole": whole, "roi": boxed, "reason": decision.reason, "fraction": round(decision.fraction, 4)}


# --- main -----------------------------------------------------------------------------------------------

def measure_set(name: str, images: Path, labels: Path, model_dir: Path, device: str, work: Path,
                localizer) -> list[dict]:
    rows = []
    cases = [files[0] for files in list_image_cases(images).values()]
    preds = {}
    for mode in ("plain", "roi"):
        pred = work / "pred" / name / mode
        if pred.exists():
            import shutil
            shutil.rmtree(pred)
        preds[mode] = pred
    records = {}
    for image in cases:
        for mode in ("plain", "roi"):     # plain first: a cold cache, if any, penalises the baseline
            rec = run_measured(image, preds[mode], model_dir, mode == "roi", device, work)
            records[(image.name, mode)] = rec
            print(f"  {name} {rec['case']} {mode}: {sum(rec['timings'].values()):.2f} s, "
                  f"{rec['tiles']} tiles, {rec['peak_rss_gb']:.2f} GB, load {rec['load']}", file=sys.stderr,
                  flush=True)
    scores = {mode: score(preds[mode], labels) for mode in preds}
    for image in cases:
        plain, roi = records[(image.name, "plain")], records[(image.name, "roi")]
        case = plain["case"]
        row = {"set": name, "case": case,
               "plain_s": sum(plain["timings"].values()), "roi_s": sum(roi["timings"].values()),
               "localize_s": roi["timings"].get("localize", 0.0),
               "plain_gb": plain["peak_rss_gb"], "roi_gb": roi["peak_rss_gb"],
               "plain_tiles": plain["tiles"], "roi_tiles": roi["tiles"],
               "plain_dsc": scores["plain"][case][0], "roi_dsc": scores["roi"][case][0],
               "plain_nsd": scores["plain"][case][1], "roi_nsd": scores["roi"][case][1],
               "plain_organ_dsc": scores["plain"][case][2], "roi_organ_dsc": scores["roi"][case][2],
               "decision": roi["decision"], "load": plain["load"] + roi["load"],
               "plain_timings": plain["timings"], "roi_timings": roi["timings"]}
        if localizer is not None and name == "large":
            row["paper_tiles"] = paper_tiles(image, localizer)
        rows.append(row)
    return rows


def _drop_times(line: str) -> str:
    """A table line without the time columns (5-7) and the load column (12), for untimed runs."""
    cells = line.split("|")
    keep = [c for i, c in enumerate(cells) if i not in (4, 5, 6, 7, 12)]
    return "|".join(keep)


def markdown(rows: list[dict], header: str, timed: bool = True) -> str:
    lines = [header, "",
             "| set | case | box % | time no ROI (s) | time ROI (s) | of which localize | ratio | peak RSS no ROI / ROI (GB) "
             "| tiles no ROI / ROI | DSC no ROI / ROI | NSD no ROI / ROI | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["decision"] or {}
        box = f"{100 * d['fraction']:.0f}" if d.get("box") else f"whole ({d.get('reason', '-')})"
        lines.append(f"| {r['set']} | {r['case']} | {box} | {r['plain_s']:.2f} | {r['roi_s']:.2f} | "
                     f"{r['localize_s']:.2f} | {r['roi_s'] / r['plain_s']:.2f} | {r['plain_gb']:.2f} / {r['roi_gb']:.2f} | "
                     f"{r['plain_tiles']} / {r['roi_tiles']} | {100 * r['plain_dsc']:.1f} / {100 * r['roi_dsc']:.1f} | "
                     f"{100 * r['plain_nsd']:.1f} / {100 * r['roi_nsd']:.1f} | "
                     f"{' '.join(f'{x:.1f}' for x in r['load'])} |")
    for name in sorted({r["set"] for r in rows}):
        sub = [r for r in rows if r["set"] == name]
        n = len(sub)
        plain_t, roi_t = sum(r["plain_s"] for r in sub), sum(r["roi_s"] for r in sub)
        lines.append(f"| **{name} (all {n})** | | | **{plain_t:.2f}** | **{roi_t:.2f}** | "
                     f"{sum(r['localize_s'] for r in sub):.2f} | **{roi_t / plain_t:.2f}** | "
                     f"{max(r['plain_gb'] for r in sub):.2f} / {max(r['roi_gb'] for r in sub):.2f} | "
                     f"{sum(r['plain_tiles'] for r in sub)} / {sum(r['roi_tiles'] for r in sub)} | "
                     f"**{100 * sum(r['plain_dsc'] for r in sub) / n:.2f} / {100 * sum(r['roi_dsc'] for r in sub) / n:.2f}** | "
                     f"{100 * sum(r['plain_nsd'] for r in sub) / n:.2f} / {100 * sum(r['roi_nsd'] for r in sub) / n:.2f} | |")
    if not timed:
        lines = [_drop_times(x) if x.startswith("|") else x for x in lines]
    for r in rows:
        if r["set"] == "compare" and "plain_organ_dsc" in r:
            d = r["decision"] or {}
            lines += ["", f"Per-organ DSC on the compare case {r['case']} (box {d.get('box')}, input axes Z, Y, X):",
                      "", "| organ | DSC no ROI | DSC ROI |", "|---|---|---|"]
            lines += [f"| {k} | {100 * v:.1f} | {100 * r['roi_organ_dsc'][k]:.1f} |"
                      for k, v in r["plain_organ_dsc"].items()]
    paper = [r for r in rows if "paper_tiles" in r]
    if paper:
        lines += ["", "The paper's architecture (patch 40x192x224 at 2.5x0.78x0.78 mm, random weights; the "
                      "same localiser), full-model tiles on the same large-field phantoms:", "",
                  "| case | tiles whole image | tiles ROI | ratio | box % |", "|---|---|---|---|---|"]
        for r in paper:
            p = r["paper_tiles"]
            lines.append(f"| {r['case']} | {p['whole']} | {p['roi']} | {p['roi'] / p['whole']:.2f} | "
                         f"{100 * p['fraction']:.0f} ({p['reason']}) |")
        tw, tr = sum(r["paper_tiles"]["whole"] for r in paper), sum(r["paper_tiles"]["roi"] for r in paper)
        lines.append(f"| **all** | **{tw}** | **{tr}** | **{tr / tw:.2f}** | |")
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
    ap.add_argument("--sets", nargs="+", choices=("large", "samples", "compare"),
                    default=["large", "samples", "compare"],
                    help="which sets to measure (default all: large-field phantoms, samples/, the compare case)")
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
        worker(Path(image), Path(out_dir), Path(model_dir), mode == "roi", device, Path(result_json))
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
              f"of that process. Load average (1 min) before/after the no-ROI and the ROI run in the last column "
              f"(the machine is shared).")
    subset = [] if set(args.sets) == {"large", "samples", "compare"} and not args.no_samples \
        else ["_".join(s for s in ("large", "samples", "compare") if s in args.sets
                       and not (s == "samples" and args.no_samples))]
    variant = (["untimed"] if args.untimed else []) + subset
    stem = (args.output or results_dir("roi", *variant)) / "roi"
    if args.untimed:
        header = header.replace("Time: sum of", "Times not recorded (run outside the measurement lock; "
                                "they would be meaningless). Time would be: sum of")
    text = markdown(rows, header, timed=not args.untimed)
    if args.untimed:
        for r in rows:
            for k in ("plain_s", "roi_s", "localize_s", "plain_timings", "roi_timings", "load"):
                r.pop(k, None)
    write_text(stem.with_suffix(".md"), text)
    write_json(stem.with_suffix(".json"), {"metadata": meta, "rows": rows})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
