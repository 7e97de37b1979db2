"""FLARE 2024 Task 3 DSC and NSD per organ, following the official scorer's rules.

Rules (T2andT3_FLARE24_DSC_NSD_Eval.py, docs/flare.md section 4), per case and organ i:
- emptiness is judged on the whole volume: GT and prediction both empty -> DSC = NSD = 1; exactly one
  empty -> 0 and 0;
- aorta, IVC and esophagus (`Organ.z_range_rule`) are scored only on the GT organ's axial range along
  the third nibabel array axis; the official code slices `[z_min:z_max]` and so drops the top GT slice.
  That off-by-one is the default; `exact_z_range=True` scores `[z_min:z_max + 1]`. When the GT organ is
  one slice thick the official slab is empty: DSC is 0/0 = NaN, and the organisers' code then stops
  with a ValueError in its surface distances (tests/data/official_scores/README.md); here NSD is NaN
  too and scoring goes on;
- DSC = 2|A & B| / (|A| + |B|); NSD = 0 when DSC < 0.2, else NSD at the organ's tolerance (mm) with
  the GT header spacing;
- values are rounded to 4 decimals with Python's round().
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from flare.labels import ORGANS, Organ

from .surface import normalised_surface_dice, surface_distances, volume_dice

DSC_NSD_MIN_DSC = 0.2  # below this DSC the official scorer sets NSD = 0 without computing it


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def organ_dsc_nsd(gt: np.ndarray, pred: np.ndarray, organ: Organ, spacing: tuple[float, float, float],
                  exact_z_range: bool = False, box: tuple[slice, ...] | None = None) -> tuple[float, float]:
    """Unrounded (DSC, NSD) of one organ.

    gt, pred: (X, Y, Z) uint8 label maps in nibabel axis order; spacing: mm along those axes.
    box: optional bounding box (slices) that contains every voxel of the organ in gt and pred; it only
    saves time, the values do not depend on it.
    """
    label = organ.label
    if box is None:
        box = tuple(slice(0, n) for n in gt.shape)
    g = gt[box] == label
    p = pred[box] == label
    g_any, p_any = bool(g.any()), bool(p.any())
    if not g_any and not p_any:
        return 1.0, 1.0
    if g_any != p_any:
        return 0.0, 0.0
    if organ.z_range_rule:
        z = np.flatnonzero(g.any(axis=(0, 1))) + box[2].start  # absolute z indices of the GT organ
        z_lo, z_hi = int(z[0]), int(z[-1]) + (1 if exact_z_range else 0)
        lo, hi = z_lo - box[2].start, z_hi - box[2].start
        g, p = g[:, :, lo:hi], p[:, :, lo:hi]
    dsc = volume_dice(g, p)
    if dsc < DSC_NSD_MIN_DSC:
        nsd = 0.0
    else:  # also when dsc is NaN (empty slab): NaN < 0.2 is False officially, and NSD comes out NaN
        nsd = normalised_surface_dice(surface_distances(g, p, spacing), organ.nsd_tolerance_mm)
    return dsc, nsd


def score_arrays(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float],
                 exact_z_range: bool = False) -> dict[str, float]:
    """Rounded DSC and NSD of all 13 organs, keyed by the official CSV columns ("Liver_DSC", ...,
    "LK_NSD"), in column order (DSC block, then NSD block).

    gt, pred: (X, Y, Z) uint8 label maps of one shape (nibabel order); spacing: GT zooms in mm.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth shape {gt.shape} != prediction shape {pred.shape}")
    n = len(ORGANS)
    boxes_gt = ndimage.find_objects(gt, max_label=n)
    boxes_pred = ndimage.find_objects(pred, max_label=n)
    dsc, nsd = {}, {}
    for organ in ORGANS:
        box = _union_box(boxes_gt[organ.label - 1], boxes_pred[organ.label - 1])
        if box is None:
            d, s = 1.0, 1.0   # both empty; no need to look
        else:
            d, s = organ_dsc_nsd(gt, pred, organ, spacing, exact_z_range, box)
        dsc[f"{organ.short}_DSC"] = round(d, 4)
        nsd[f"{organ.short}_NSD"] = round(s, 4)
    return {**dsc, **nsd}
