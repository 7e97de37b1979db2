"""`filter`: keep the pseudo-labels that hold all 13 organs (and optional volume bounds), with a report.

The paper kept the 99 of 1,331 pseudo-labelled T1 images in which all 13 organs were present. Per case
this reads the label map, counts the voxels of each organ, converts them to millilitres with the
header's spacing, and decides: keep if every required organ has at least --min-voxels voxels, its
volume lies inside the optional bounds, and the map holds no value outside 0..13.

Outputs: a CSV (one row per case: keep, reason, volume of each organ in mL), a markdown summary
(counts, per-organ presence rate, rejected cases and why) and a keep list (one case id per line) for
`assemble`.
"""
from __future__ import annotations

import argparse
import csv
import io as _stdio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from flare.labels import NUM_CLASSES, ORGAN_BY_LABEL, ORGANS
from labeltransfer import io

_BY_NAME = {}
for _o in ORGANS:
    _BY_NAME.update({str(_o.label): _o, _o.short.lower(): _o, _o.name.lower(): _o,
                     _o.name.lower().replace(" ", "_"): _o})


def organ_from_key(key: str | int):
    """An Organ from its label id, CSV short name (e.g. "RK") or name (e.g. "right kidney")."""
    o = _BY_NAME.get(str(key).strip().lower())
    if o is None:
        raise ValueError(f"unknown organ {key!r}; use a label id 1-13, a short name "
                         f"({', '.join(o.short for o in ORGANS)}) or a name")
    return o


def load_bounds(path: str | Path) -> dict[int, tuple[float, float]]:
    """Volume bounds in mL from JSON {"liver": [min, max], "RK": [min, null], ...} -> {label: (min, max)}."""
    raw = io.read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected an object {{organ: [min_ml, max_ml]}}")  # noqa: TRY004  (bad file content)
    out = {}
    for key, val in raw.items():
        try:
            o = organ_from_key(key)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        if not (isinstance(val, (list, tuple)) and len(val) == 2):
            raise ValueError(f"{path}: bounds of {key!r} must be [min_ml, max_ml] (null for open), got {val!r}")
        lo = 0.0 if val[0] is None else float(val[0])
        hi = float("inf") if val[1] is None else float(val[1])
        if lo > hi:
            raise ValueError(f"{path}: bounds of {key!r} have min {lo} > max {hi}")
        out[o.label] = (lo, hi)
    return out


@dataclass
class LabelCheck:
    """Whether one pseudo-label is kept, and its per-organ volumes."""
    case: str
    keep: bool
    reason: str                      # "" when kept
    voxels: dict[int, int]           # label -> voxel count (organs 1..13)
    ml: dict[int, float]             # label -> volume in mL


def assess(label: sitk.Image, case: str, required: list[int], min_voxels: int = 1,
           bounds: dict[int, tuple[float, float]] | None = None) -> LabelCheck:
    """Keep/reject one label map. Volumes in mL = voxels x product(spacing in mm) / 1000."""
    arr = sitk.GetArrayViewFromImage(label)
    if not np.issubdtype(arr.dtype, np.integer) and not np.all(np.mod(arr, 1) == 0):
        return LabelCheck(case, False, "label map has non-integer values", {}, {})
    a = arr.astype(np.int64).ravel()
    if a.size and a.min() < 0:
        return LabelCheck(case, False, f"negative values (min {int(a.min())})", {}, {})
    counts = np.bincount(a, minlength=NUM_CLASSES)
    bad = (np.flatnonzero(counts[NUM_CLASSES:]) + NUM_CLASSES).tolist()
    if bad:
        return LabelCheck(case, False, f"values outside 0..{NUM_CLASSES - 1}: {bad[:5]}", {}, {})
    voxel_ml = float(np.prod(label.GetSpacing())) / 1000.0
    voxels = {o.label: int(counts[o.label]) for o in ORGANS}
    ml = {k: v * voxel_ml for k, v in voxels.items()}
    reasons = []
    missing = [ORGAN_BY_LABEL[k].short for k in required if voxels[k] < min_voxels]
    if missing:
        reasons.append("missing " + ",".join(missing))
    for k, (lo, hi) in (bounds or {}).items():
        if voxels[k] >= min_voxels and not lo <= ml[k] <= hi:
            reasons.append(f"{ORGAN_BY_LABEL[k].short} {ml[k]:.1f} mL outside [{lo:g}, {hi:g}]")
    return LabelCheck(case, not reasons, "; ".join(reasons), voxels, ml)


def filter_folder(label_dir: str | Path, required: list[int] | None = None, min_voxels: int = 1,
                  bounds: dict | None = None, threads: int = 2, log=print) -> tuple[list[LabelCheck], dict[str, str]]:
    """Assess every `<case>.nii.gz` of a folder. Returns (results sorted by case, unreadable case -> error)."""
    required = [o.label for o in ORGANS] if required is None else required
    files = io.list_label_cases(label_dir)

    def one(item):
        case, path = item
        try:
            return assess(io.read_image(path), case, required, min_voxels, bounds), None
        except io.CaseError as e:
            return None, (case, str(e))

    results, errors = [], {}
    with ThreadPoolExecutor(max(1, threads)) as pool:  # SimpleITK reading releases the GIL
        for n, (res, err) in enumerate(pool.map(one, files.items()), 1):
            if res is not None:
                results.append(res)
            else:
                errors[err[0]] = err[1]
            if n % 100 == 0 or n == len(files):
                log(f"  [{n}/{len(files)}] assessed")
    return results, errors


def report_csv(results: list[LabelCheck]) -> str:
    buf = _stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case", "keep", "reason"] + [f"{o.short}_ml" for o in ORGANS])
    for r in results:
        w.writerow([r.case, int(r.keep), r.reason] + [f"{r.ml.get(o.label, 0.0):.3f}" for o in ORGANS])
    return buf.getvalue()


def report_markdown(results: list[LabelCheck], errors: dict[str, str], label_dir: str, criteria: str) -> str:
    n = len(results)
    kept = sum(r.keep for r in results)
    lines = [f"# Pseudo-label filter: {label_dir}", "", f"Criteria: {criteria}", "",
             f"Kept **{kept}** of {n} readable cases" + (f"; {len(errors)} unreadable." if errors else "."), "",
             "| organ | present in | median mL (where present) |", "|---|---|---|"]
    for o in ORGANS:
        vols = [r.ml[o.label] for r in results if r.voxels.get(o.label, 0) > 0]
        med = f"{np.median(vols):.1f}" if vols else "-"
        lines.append(f"| {o.name} | {len(vols)}/{n} | {med} |")
    rejected = [r for r in results if not r.keep]
    if rejected:
        lines += ["", "## Rejected", "", "| case | reason |", "|---|---|"]
        lines += [f"| {r.case} | {r.reason} |" for r in rejected]
    if errors:
        lines += ["", "## Unreadable", "", "| case | error |", "|---|---|"]
        lines += [f"| {c} | {e} |" for c, e in sorted(errors.items())]
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("label_dir", help="folder of <case>.nii.gz label maps (e.g. pseudolabel output)")
    p.add_argument("-o", "--output", required=True,
                   help="folder for the report (created): filter.csv, filter.md and keep.txt (kept case ids)")
    p.add_argument("--min-voxels", type=int, default=1, help="voxels an organ needs to count as present (default 1)")
    p.add_argument("--require", default=None,
                   help="comma-separated organs that must be present (ids or short names; default all 13)")
    p.add_argument("--bounds", default=None, help='JSON file {"liver": [min_ml, max_ml], "RK": [min, null], ...}')
    p.add_argument("--threads", type=int, default=2, help="reader threads (default 2)")


def run(args: argparse.Namespace) -> int:
    required = None if args.require is None else [organ_from_key(k).label for k in args.require.split(",")]
    bounds = load_bounds(args.bounds) if args.bounds else None
    results, errors = filter_folder(args.label_dir, required, args.min_voxels, bounds, args.threads)
    req_txt = "all 13 organs" if required is None else ",".join(ORGAN_BY_LABEL[k].short for k in required)
    criteria = f"present (>= {args.min_voxels} voxels): {req_txt}"
    if bounds:
        criteria += "; volume bounds (mL): " + json.dumps({ORGAN_BY_LABEL[k].short: v for k, v in bounds.items()})
    out = Path(args.output)
    io.write_text_atomic(report_csv(results), out / "filter.csv")
    io.write_text_atomic(report_markdown(results, errors, args.label_dir, criteria), out / "filter.md")
    io.write_text_atomic("".join(f"{r.case}\n" for r in results if r.keep), out / "keep.txt")
    kept = sum(r.keep for r in results)
    print(f"filter: kept {kept} of {len(results)} cases ({len(errors)} unreadable); "
          f"report {out / 'filter.csv'}, {out / 'filter.md'}, keep list {out / 'keep.txt'}")
    for c, e in errors.items():
        print(f"  {c}: {e}")
    return 1 if errors else 0
