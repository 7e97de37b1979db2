"""Label pairs scored by the organisers' FLARE 2024 Task 3 scorer, for tests/test_evaluation_official.py.

Ground truths: the three committed samples (samples/labels) and one variant of phantom_0003 kept in
tests/data/official_scores/gt. Predictions: deterministic edits of the ground truths that reach every
rule of the scorer (whole-map shift, an organ left out, an organ only in the prediction, eroded and
dilated organs, ragged boundaries, aorta/IVC/esophagus beyond or short of the GT axial range, a DSC
under 0.2, a two-slice tube whose official axial slab is one slice). The organisers' numbers for these pairs are in
tests/data/official_scores/official.csv; tests/data/official_scores/README.md says how they were made.

Regenerate the committed NIfTI files (deterministic): python -m tests._official_pairs
"""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "official_scores"
SAMPLE_LABELS = ROOT / "samples" / "labels"
CASES = ("phantom_0001.nii.gz", "phantom_0002.nii.gz", "phantom_0003.nii.gz", "phantom_0004.nii.gz")


def _load(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj).astype(np.uint8), img


def _z_extent(mask: np.ndarray) -> tuple[int, int]:
    z = np.flatnonzero(mask.any(axis=(0, 1)))
    return int(z[0]), int(z[-1])


def _ground_truth_0004() -> np.ndarray:
    """phantom_0003 without the right adrenal (7), with the IVC (6) on two middle slices only (the
    official axial slab [z_min:z_max] then holds one slice)."""
    gt, _ = _load(SAMPLE_LABELS / "phantom_0003.nii.gz")
    gt = gt.copy()
    gt[gt == 7] = 0
    lo, hi = _z_extent(gt == 6)
    mid = (lo + hi) // 2
    ivc = gt == 6
    ivc[:, :, mid:mid + 2] = False
    gt[ivc] = 0
    return gt


def ground_truth(name: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    """(X, Y, Z) uint8 ground truth of a case, and the NIfTI image whose header a prediction copies."""
    if name == "phantom_0004.nii.gz":
        _, img = _load(SAMPLE_LABELS / "phantom_0003.nii.gz")
        return _ground_truth_0004(), img
    return _load(SAMPLE_LABELS / name)


def _move(pred: np.ndarray, label: int, offset: tuple[int, int, int]) -> None:
    """Move one organ by `offset` voxels, over whatever lies there."""
    mask = pred == label
    pred[mask] = 0
    pred[np.roll(mask, offset, axis=(0, 1, 2))] = label


def prediction(name: str) -> np.ndarray:
    """The committed prediction of a case, rebuilt from its ground truth."""
    gt, _ = ground_truth(name)
    pred = gt.copy()
    if name == "phantom_0001.nii.gz":
        pred = np.roll(pred, 1, axis=0)            # every organ one voxel off along x
        pred[pred == 9] = 0                        # gallbladder missed: 0 and 0
    elif name == "phantom_0002.nii.gz":
        liver = gt == 1
        pred[liver & ~ndimage.binary_erosion(liver)] = 0
        grown = ndimage.binary_dilation(gt == 3) & (pred == 0)
        pred[grown] = 3                            # spleen one voxel thicker
        lo, hi = _z_extent(gt == 5)                # aorta: 3 slices past both GT ends (ignored by the
        ring = gt[:, :, (lo + hi) // 2] == 5       # axial-range rule), top GT slice missing
        for z in [*range(max(lo - 3, 0), lo), *range(hi + 1, min(hi + 4, gt.shape[2]))]:
            pred[:, :, z][ring & (pred[:, :, z] == 0)] = 5
        pred[:, :, hi][pred[:, :, hi] == 5] = 0
        size = np.ptp(np.argwhere(gt == 8), axis=0) + 1
        _move(pred, 8, (int(size[0]) - 1, 0, 0))  # left adrenal shifted by nearly its width: DSC < 0.2
    elif name == "phantom_0003.nii.gz":
        rng = np.random.default_rng(3)
        edge = (gt > 0) & (ndimage.grey_erosion(gt, size=3) != gt)   # voxels touching another label
        pred[edge & (rng.random(gt.shape) < 0.3)] = 0                # ragged boundaries
        lo, hi = _z_extent(gt == 10)
        pred[:, :, lo:lo + 2][pred[:, :, lo:lo + 2] == 10] = 0      # esophagus short by 2 slices
        _move(pred, 6, (0, 2, 0))                                    # IVC 2 voxels off along y
    elif name == "phantom_0004.nii.gz":
        pred, _ = _load(SAMPLE_LABELS / "phantom_0003.nii.gz")       # RAG only in the prediction;
        pred = pred.copy()                                           # IVC over its whole length
    else:
        raise ValueError(f"unknown case {name!r}; known: {', '.join(CASES)}")
    return pred


def write_all() -> None:
    """Write the predictions (and the one extra ground truth) with the ground truth's header."""
    for sub in ("pred", "gt"):
        (DATA / sub).mkdir(parents=True, exist_ok=True)
    for name in CASES:
        gt, img = ground_truth(name)
        header = img.header.copy()
        header.set_data_dtype(np.uint8)
        header["scl_slope"], header["scl_inter"] = 1, 0
        items = [("pred", prediction(name))]
        if name == "phantom_0004.nii.gz":
            items.append(("gt", gt))
        for sub, array in items:
            out = DATA / sub / name
            tmp = out.with_name(f".tmp_{name}")
            nib.save(nib.Nifti1Image(array, img.affine, header), str(tmp))
            os.replace(tmp, out)
            print(out.relative_to(ROOT))


if __name__ == "__main__":
    write_all()
