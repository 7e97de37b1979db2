"""Scoring one case and a folder of cases, and writing the official CSV.

A case is a ground-truth file `<case>.nii.gz` in the GT folder; its prediction is the file of the same
name in the prediction folder. A missing prediction scores 0 for every organ; a prediction that cannot
be read or lies on another grid than its ground truth scores 0 too and is reported as an error. A
ground truth that cannot be read is reported and left out. One bad case never stops the others.
"""
from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from flare.labels import csv_columns
from inference.files.atomic import atomic_output
from inference.files.cases import list_label_cases

from .masks import LabelMap, MaskError, as_label_map, check_same_grid
from .metrics import score_arrays

SUFFIX = ".nii.gz"


def score_case(pred, gt, exact_z_range: bool = False) -> dict[str, float]:
    """FLARE DSC and NSD of one case.

    pred, gt: paths to NIfTI label maps or SimpleITK images (or LabelMaps). Files are read with nibabel
    and cast to uint8 like the official scorer; the spacing comes from the ground truth.
    Returns {"Liver_DSC": ..., ..., "LK_NSD": ...} in official column order, rounded to 4 decimals.
    Raises MaskError (a ValueError) naming the file when a mask is unreadable or the prediction's
    shape or geometry differs from the ground truth's.
    """
    gt_map = as_label_map(gt, "ground truth")
    pred_map = as_label_map(pred, "prediction")
    check_same_grid(pred_map, gt_map)
    return score_arrays(gt_map.array, pred_map.array, gt_map.spacing, exact_z_range)


def zero_scores() -> dict[str, float]:
    """The row of a case without a usable prediction: every organ DSC = NSD = 0."""
    return {c: 0.0 for c in csv_columns()[1:]}


@dataclass
class FolderResult:
    """rows: one dict per scored case ("Name" + official columns), sorted by name; missing: case files
    without a prediction (scored 0); errors: file name -> message (bad predictions are scored 0, bad
    ground truths are left out of rows); extra: predictions without a ground truth (ignored)."""
    rows: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)


def _nifti_names(folder: str) -> list[str]:
    """File names of the label maps in `folder` (the repository's one case discovery)."""
    return sorted(p.name for p in list_label_cases(folder, SUFFIX).values())


def _score_one(args) -> tuple[str, dict | None, str | None]:
    """(name, row or None, error or None) for one case; never raises."""
    name, pred_dir, gt_dir, exact = args
    try:
        gt_map: LabelMap = as_label_map(os.path.join(gt_dir, name))
    except MaskError as exc:
        return name, None, str(exc)
    try:
        scores = score_case(os.path.join(pred_dir, name), gt_map, exact)
        return name, {"Name": name, **scores}, None
    except MaskError as exc:
        return name, {"Name": name, **zero_scores()}, str(exc)
    except Exception as exc:  # a bug or an odd file must not stop the other cases
        return name, {"Name": name, **zero_scores()}, f"{name}: {type(exc).__name__}: {exc}"


def score_folder(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, exact_z_range: bool = False,
                 workers: int = 1, progress: bool = False) -> FolderResult:
    """Score every `<case>.nii.gz` of `gt_dir` against the same file name in `pred_dir`."""
    pred_dir, gt_dir = os.fspath(pred_dir), os.fspath(gt_dir)
    for d, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not os.path.isdir(d):
            raise FileNotFoundError(f"{what} folder {d} does not exist")
    gt_names = _nifti_names(gt_dir)
    if not gt_names:
        raise FileNotFoundError(f"no *{SUFFIX} ground-truth files in {gt_dir}")
    pred_names = set(_nifti_names(pred_dir))
    result = FolderResult(extra=sorted(pred_names - set(gt_names)))
    todo = []
    for name in gt_names:
        if name in pred_names:
            todo.append((name, pred_dir, gt_dir, exact_z_range))
        else:
            result.missing.append(name)
            result.rows.append({"Name": name, **zero_scores()})
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            _collect(pool.map(_score_one, todo), result, len(todo), progress)
    else:
        _collect(map(_score_one, todo), result, len(todo), progress)
    result.rows.sort(key=lambda r: r["Name"])
    return result


def _collect(outcomes, result: FolderResult, total: int, progress: bool) -> None:
    for n, (name, row, error) in enumerate(outcomes, 1):
        if row is not None:
            result.rows.append(row)
        if error is not None:
            result.errors[name] = error
        if progress:
            print(f"[{n}/{total}] {name}" + (" ERROR" if error else ""), file=sys.stderr, flush=True)


def _fmt(v: float) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else repr(float(v))


def write_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """Write rows with the official columns (Name, 13 x _DSC, 13 x _NSD), atomically."""
    import csv

    cols = csv_columns()
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([r["Name"]] + [_fmt(r[c]) for c in cols[1:]])

