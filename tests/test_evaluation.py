"""FLARE DSC/NSD scorer: known answers (identical, disjoint, shifted cube in closed form), the official
rules (empty masks, DSC < 0.2, axial range of aorta/IVC/esophagus with the off-by-one, rounding, GT
spacing), equality with DeepMind's surface-distance package, and the folder/CLI behaviour."""
from __future__ import annotations

import csv
import math
import os
import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from evaluation import MaskError, score_case, score_folder, write_csv
from evaluation.__main__ import main as cli_main
from evaluation.masks import LabelMap
from evaluation.metrics import organ_dsc_nsd, score_arrays
from evaluation.surface import normalised_surface_dice, surface_distances, volume_dice
from flare.labels import ORGAN_BY_LABEL, ORGANS, csv_columns

GB = ORGAN_BY_LABEL[9]        # gallbladder: tolerance 2 mm, no axial-range rule
LIVER = ORGAN_BY_LABEL[1]     # tolerance 5 mm
AORTA = ORGAN_BY_LABEL[5]     # axial-range rule, tolerance 2 mm


def _cube(shape, lo, size):
    m = np.zeros(shape, dtype=np.uint8)
    m[lo[0]:lo[0] + size, lo[1]:lo[1] + size, lo[2]:lo[2] + size] = 1
    return m


def shifted_cube_nsd(L: int, s: int, h: float, tol: float) -> float:
    """Closed-form NSD of an L-voxel cube vs the same cube shifted by s voxels along one axis
    (isotropic spacing h mm, s * h > tol), with DeepMind surfels: surfels sit on the voxel-corner
    lattice; a face point has area h^2, an edge point h^2 * sqrt(2)/2, a corner h^2 * sqrt(3)/8
    (marching-cubes triangles). Distances between lattice points: the GT face behind the shift is s*h
    from the prediction; a side-face point at depth x < s is (s - x) h away, x >= s lies on the
    prediction's surface; a point of the leading face at (y, z) is min(s, y, z, L-y, L-z) h away.
    By symmetry the prediction's surfels give the same fraction."""
    t = tol / h
    edge, corner = math.sqrt(2) / 2, math.sqrt(3) / 8
    k_side = sum(1 for x in range(1, L) if s - x <= t)             # side-face depths within tol
    inner = sum(1 for y in range(1, L) if t < y < L - t)           # leading-face rows farther than tol
    within = ((L - 1) ** 2 - inner ** 2) + 4 * (L - 1) * k_side + (4 * k_side + 4 * (L - 1)) * edge + 4 * corner
    total = 6 * (L - 1) ** 2 + 12 * (L - 1) * edge + 8 * corner
    return within / total


# --- surface distances and NSD ------------------------------------------------------------------

@pytest.mark.parametrize("L,s,h,tol", [(10, 4, 1.0, 2.0), (12, 5, 0.8, 3.0), (10, 3, 1.0, 2.0)])
def test_shifted_cube_nsd_matches_closed_form(L, s, h, tol):
    shape = (L + 10, L + 6, L + 6)
    gt = _cube(shape, (2, 3, 3), L).astype(bool)
    pred = _cube(shape, (2 + s, 3, 3), L).astype(bool)
    nsd = normalised_surface_dice(surface_distances(gt, pred, (h, h, h)), tol)
    assert nsd == pytest.approx(shifted_cube_nsd(L, s, h, tol), abs=1e-12)
    assert volume_dice(gt, pred) == pytest.approx((L - s) / L)


def test_shifted_cube_scores_through_official_rules():
    """Gallbladder (2 mm) cube shifted by 4 voxels at 1 mm: DSC 0.6, NSD from the closed form, 4 decimals."""
    shape = (20, 16, 16)
    gt = _cube(shape, (2, 3, 3), 10) * 9
    pred = _cube(shape, (6, 3, 3), 10) * 9
    scores = score_arrays(gt, pred, (1.0, 1.0, 1.0))
    assert scores["Gallbladder_DSC"] == 0.6
    assert scores["Gallbladder_NSD"] == round(shifted_cube_nsd(10, 4, 1.0, 2.0), 4) == 0.6966
    # the other organs are absent from both: 1 and 1
    assert scores["Liver_DSC"] == 1.0 and scores["Liver_NSD"] == 1.0


def test_identical_masks_score_one():
    gt = np.zeros((30, 30, 20), np.uint8)
    gt[5:20, 5:25, 2:15] = 1
    gt[22:28, 10:20, 5:10] = 3
    scores = score_arrays(gt, gt.copy(), (0.8, 0.8, 2.5))
    assert all(v == 1.0 for v in scores.values())
    assert list(scores) == csv_columns()[1:]


def test_disjoint_masks_score_zero():
    gt = _cube((40, 20, 20), (2, 2, 2), 8) * 1
    pred = _cube((40, 20, 20), (25, 2, 2), 8) * 1
    s = score_arrays(gt, pred, (1.0, 1.0, 1.0))
    assert (s["Liver_DSC"], s["Liver_NSD"]) == (0.0, 0.0)


def test_nsd_is_zero_when_dsc_below_0_2():
    """Two adjacent one-voxel plates: DSC 0, surfaces within 1 mm (raw NSD at 5 mm would be 1), so the
    rule, not the geometry, makes NSD 0."""
    gt = np.zeros((20, 20, 20), np.uint8)
    pred = np.zeros_like(gt)
    gt[10, 2:18, 2:18] = 1
    pred[11, 2:18, 2:18] = 1
    raw = normalised_surface_dice(surface_distances(gt == 1, pred == 1, (1, 1, 1)), 5.0)
    assert raw == 1.0
    s = score_arrays(gt, pred, (1.0, 1.0, 1.0))
    assert (s["Liver_DSC"], s["Liver_NSD"]) == (0.0, 0.0)
    # DSC just at 0.2 is kept: 1 of 9 slices shared -> 2*1/(9+1)... build 0.2 exactly: |A|=|B|=5 slabs, 1 shared
    gt = np.zeros((30, 20, 20), np.uint8)
    pred = np.zeros_like(gt)
    gt[10:15, 2:18, 2:18] = 1
    pred[14:19, 2:18, 2:18] = 1
    d, n = organ_dsc_nsd(gt, pred, LIVER, (1.0, 1.0, 1.0))
    assert d == pytest.approx(0.2) and not d < 0.2
    assert n > 0


def test_empty_mask_rules():
    gt = np.zeros((20, 20, 20), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:8, 2:8, 2:8] = 2        # right kidney only in GT
    pred[12:18, 2:8, 2:8] = 3    # spleen only in prediction
    s = score_arrays(gt, pred, (1.0, 1.0, 1.0))
    assert (s["RK_DSC"], s["RK_NSD"]) == (0.0, 0.0)
    assert (s["Spleen_DSC"], s["Spleen_NSD"]) == (0.0, 0.0)
    assert (s["LK_DSC"], s["LK_NSD"]) == (1.0, 1.0)         # absent in both


def _tube(shape, z0, z1, label=5, centre=(10, 10), r=3):
    m = np.zeros(shape, np.uint8)
    x, y = np.ogrid[:shape[0], :shape[1]]
    disk = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= r * r
    for z in range(z0, z1):
        m[:, :, z][disk] = label
    return m


def test_axial_range_rule_official_off_by_one_and_exact():
    """Aorta GT on z = 10..19. The prediction covers 10..18 (misses the top slice) plus slices outside
    the GT range (ignored). Official slab [10, 19): DSC = NSD = 1; exact slab [10, 20): DSC = 18/19."""
    shape = (20, 20, 40)
    gt = _tube(shape, 10, 20)
    pred = _tube(shape, 10, 19) | _tube(shape, 0, 8) | _tube(shape, 25, 40)
    official = score_arrays(gt, pred, (1.0, 1.0, 3.0))
    exact = score_arrays(gt, pred, (1.0, 1.0, 3.0), exact_z_range=True)
    assert (official["Aorta_DSC"], official["Aorta_NSD"]) == (1.0, 1.0)
    assert exact["Aorta_DSC"] == round(18 / 19, 4) == 0.9474
    assert exact["Aorta_NSD"] < 1.0        # the missing top slice is 3 mm > 2 mm away
    # the same masks as liver (no axial-range rule): the extra slices count
    liver = score_arrays((gt > 0).astype(np.uint8), (pred > 0).astype(np.uint8), (1.0, 1.0, 2.0))
    assert liver["Liver_DSC"] == round(2 * 9 / (10 + 9 + 8 + 15), 4)


def test_axial_range_rule_applies_to_ivc_and_esophagus_only():
    shape = (20, 20, 40)
    for label, col in ((6, "IVC"), (10, "Esophagus"), (3, "Spleen")):
        gt = _tube(shape, 10, 20, label)
        pred = _tube(shape, 10, 30, label)
        s = score_arrays(gt, pred, (1.0, 1.0, 1.0))
        expected = 1.0 if ORGAN_BY_LABEL[label].z_range_rule else round(2 * 10 / 30, 4)
        assert s[f"{col}_DSC"] == expected


def test_one_slice_tube_gives_nan_officially_and_one_exactly():
    """A GT aorta on a single slice: the official slab [z, z) is empty, 0/0 -> NaN for both values."""
    gt = _tube((20, 20, 10), 4, 5)
    off = score_arrays(gt, gt.copy(), (1.0, 1.0, 1.0))
    assert math.isnan(off["Aorta_DSC"]) and math.isnan(off["Aorta_NSD"])
    ex = score_arrays(gt, gt.copy(), (1.0, 1.0, 1.0), exact_z_range=True)
    assert (ex["Aorta_DSC"], ex["Aorta_NSD"]) == (1.0, 1.0)


def test_values_rounded_to_4_decimals():
    gt = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(gt)
    gt[0:2, 0, 0] = 1
    pred[1:3, 0, 0] = 1   # |A| = |B| = 2, overlap 1 -> DSC 0.5
    pred[5, 5, 5] = 1     # |B| = 3 -> 2/5 = 0.4
    gt[7, 7, 7] = 1       # |A| = 3 -> 2*1/6 = 0.3333...
    s = score_arrays(gt, pred, (1.0, 1.0, 1.0))
    assert s["Liver_DSC"] == 0.3333


def test_surface_distance_equals_deepmind_package():
    """Same distances/areas as surface-distance 0.1 on random blobs and anisotropic spacing."""
    sd = pytest.importorskip("surface_distance")
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(3):
        a = ndimage.gaussian_filter(rng.random((30, 34, 22)), 2.5) > 0.5
        b = ndimage.gaussian_filter(rng.random((30, 34, 22)), 2.5) > 0.5
        spacing = tuple(float(v) for v in rng.uniform(0.5, 3.0, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # scipy.ndimage.filters namespace
            ref = sd.compute_surface_distances(a, b, spacing)
            ref_dsc = sd.compute_dice_coefficient(a, b)
        ours = surface_distances(a, b, spacing)
        assert np.array_equal(np.sort(ours.gt.distance_mm), ref["distances_gt_to_pred"])
        assert np.array_equal(np.sort(ours.pred.distance_mm), ref["distances_pred_to_gt"])
        # the package sorts (distance, area) pairs, so compare the pairs as sorted multisets
        pairs = np.array(sorted(zip(ours.gt.distance_mm, ours.gt.area_mm2)))
        assert np.array_equal(pairs[:, 1], ref["surfel_areas_gt"])
        pairs = np.array(sorted(zip(ours.pred.distance_mm, ours.pred.area_mm2)))
        assert np.array_equal(pairs[:, 1], ref["surfel_areas_pred"])
        for tol in (1.0, 2.0, 5.0):
            assert normalised_surface_dice(ours, tol) == pytest.approx(
                sd.compute_surface_dice_at_tolerance(ref, tol), abs=1e-12)
        assert volume_dice(a, b) == pytest.approx(ref_dsc, abs=1e-15)


# --- files, geometry, folders, CLI -----------------------------------------------------------------

def _write(arr_xyz: np.ndarray, path, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    """Write a nibabel-order (x, y, z) uint8 array as NIfTI via SimpleITK."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr_xyz.transpose(2, 1, 0)).astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return img


def test_score_case_from_files_uses_third_nibabel_axis_and_gt_spacing(tmp_path):
    gt = _tube((20, 20, 40), 10, 20)
    pred = _tube((20, 20, 40), 10, 19)
    _write(gt, tmp_path / "gt.nii.gz", spacing=(0.7, 0.7, 3.0))
    _write(pred, tmp_path / "pred.nii.gz", spacing=(0.7, 0.7, 3.0))
    assert nib.load(tmp_path / "gt.nii.gz").shape == (20, 20, 40)
    s = score_case(tmp_path / "pred.nii.gz", tmp_path / "gt.nii.gz")
    assert (s["Aorta_DSC"], s["Aorta_NSD"]) == (1.0, 1.0)
    e = score_case(tmp_path / "pred.nii.gz", tmp_path / "gt.nii.gz", exact_z_range=True)
    assert e["Aorta_DSC"] == 0.9474
    # NSD at 2 mm with 3 mm slices: the missing top slice is 3 mm away. The exact-range NSD equals
    # DeepMind's package (a second implementation) on the slab with the GT header spacing (0.7, 0.7, 3);
    # with the slab's z spacing taken as 1 mm instead, the top slice would be within 2 mm (NSD 1).
    sd = pytest.importorskip("surface_distance")
    g, p = gt[:, :, 10:20] == 5, pred[:, :, 10:20] == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(g, p, (0.7, 0.7, 3.0)), 2.0)
        ref_1mm = sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(g, p, (0.7, 0.7, 1.0)), 2.0)
    assert e["Aorta_NSD"] == round(ref, 4) < 1.0
    assert ref_1mm == 1.0


def test_sitk_input_equals_file_input(tmp_path):
    gt = np.zeros((24, 20, 16), np.uint8)
    gt[3:15, 4:16, 2:12] = 1
    gt[16:22, 5:12, 4:10] = 13
    pred = np.roll(gt, 1, axis=0)
    d = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    gi = _write(gt, tmp_path / "g.nii.gz", (0.9, 1.1, 2.5), (10.0, -20.0, 30.0), d)
    pi = _write(pred, tmp_path / "p.nii.gz", (0.9, 1.1, 2.5), (10.0, -20.0, 30.0), d)
    assert score_case(pi, gi) == score_case(tmp_path / "p.nii.gz", tmp_path / "g.nii.gz")


def test_geometry_mismatch_is_a_clear_error(tmp_path):
    gt = _cube((16, 16, 16), (2, 2, 2), 8)
    _write(gt, tmp_path / "gt.nii.gz", spacing=(1.0, 1.0, 1.0))
    _write(gt, tmp_path / "spacing.nii.gz", spacing=(1.0, 1.0, 2.0))
    _write(gt, tmp_path / "origin.nii.gz", origin=(0.0, 0.0, 5.0))
    _write(gt[:, :, :15], tmp_path / "shape.nii.gz")
    with pytest.raises(MaskError, match=r"shape.nii.gz: shape \(16, 16, 15\) differs"):
        score_case(tmp_path / "shape.nii.gz", tmp_path / "gt.nii.gz")
    with pytest.raises(MaskError, match="spacing.nii.gz: spacing/direction differ"):
        score_case(tmp_path / "spacing.nii.gz", tmp_path / "gt.nii.gz")
    with pytest.raises(MaskError, match="origin.nii.gz: origin"):
        score_case(tmp_path / "origin.nii.gz", tmp_path / "gt.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(MaskError, match="broken.nii.gz: cannot read"):
        score_case(tmp_path / "broken.nii.gz", tmp_path / "gt.nii.gz")


def test_float_masks_are_cast_like_the_official_scorer(tmp_path):
    """Labels stored as float (e.g. 1.0, 2.9999) are truncated by the uint8 cast of get_fdata()."""
    gt = np.zeros((12, 12, 12), np.float32)
    gt[2:6, 2:6, 2:6] = 1.0
    pred = gt.copy()
    pred[2:6, 2:6, 2:3] = 1.9    # still 1 after the cast
    nib.save(nib.Nifti1Image(gt, np.eye(4)), tmp_path / "g.nii.gz")
    nib.save(nib.Nifti1Image(pred, np.eye(4)), tmp_path / "p.nii.gz")
    assert score_case(tmp_path / "p.nii.gz", tmp_path / "g.nii.gz")["Liver_DSC"] == 1.0


def _folder_case(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    base = _cube((20, 20, 20), (3, 3, 3), 10)
    for name in ("case_a", "case_b", "case_c"):
        _write(base, gt_dir / f"{name}.nii.gz")
    _write(base, pred_dir / "case_a.nii.gz")                        # perfect
    _write(base[:, :, :19], pred_dir / "case_b.nii.gz")             # wrong shape
    _write(base, pred_dir / "extra.nii.gz")                         # no GT
    return gt_dir, pred_dir                                          # case_c: missing


def test_score_folder_missing_mismatch_extra(tmp_path):
    gt_dir, pred_dir = _folder_case(tmp_path)
    res = score_folder(pred_dir, gt_dir)
    names = [r["Name"] for r in res.rows]
    assert names == ["case_a.nii.gz", "case_b.nii.gz", "case_c.nii.gz"]
    assert res.rows[0]["Liver_DSC"] == 1.0 and res.rows[0]["Spleen_NSD"] == 1.0
    assert all(res.rows[i][c] == 0.0 for i in (1, 2) for c in csv_columns()[1:])
    assert res.missing == ["case_c.nii.gz"]
    assert list(res.errors) == ["case_b.nii.gz"] and "differs from the ground truth" in res.errors["case_b.nii.gz"]
    assert res.extra == ["extra.nii.gz"]
    res2 = score_folder(pred_dir, gt_dir, workers=2)
    assert res2.rows == res.rows and res2.errors == res.errors


def test_cli_writes_official_csv_and_table(tmp_path, capsys):
    gt_dir, pred_dir = _folder_case(tmp_path)
    out = tmp_path / "res" / "scores.csv"
    rc = cli_main(["-p", str(pred_dir), "-g", str(gt_dir), "-o", str(out.parent), "-q"])
    assert rc == 1                                   # one case had a geometry error
    text = capsys.readouterr()
    assert "Liver" in text.out and "Average" in text.out and "±" in text.out
    assert "missing prediction (scored 0): case_c.nii.gz" in text.out
    assert "case_b.nii.gz" in text.err
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == csv_columns()
    assert rows[1][0] == "case_a.nii.gz" and rows[1][1] == "1.0"
    assert len(rows) == 4
    assert not [p for p in os.listdir(out.parent) if p.startswith(".tmp")]
    assert cli_main(["-p", str(tmp_path / "nope"), "-g", str(gt_dir), "-o", str(out.parent)]) == 2


def test_write_csv_formats_nan(tmp_path):
    row = {"Name": "x.nii.gz", **{c: 0.5 for c in csv_columns()[1:]}}
    row["Aorta_DSC"] = float("nan")
    write_csv([row], tmp_path / "r.csv")
    line = (tmp_path / "r.csv").read_text().splitlines()[1].split(",")
    assert line[csv_columns().index("Aorta_DSC")] == "nan"


def test_phantom_label_scored_against_itself():
    """Every organ of a phantom label map scores exactly 1/1 against itself."""
    from phantoms import generate_case

    _, lab = generate_case(3, "t1", spacing=(2.0, 2.0, 4.0), direction="axial", absent=())
    scores = score_case(lab, lab)
    assert list(scores) == csv_columns()[1:] and set(scores.values()) == {1.0}


def test_shifted_label_map_scores_hand_computed_values():
    """A label map of two cubes, moved 3 voxels along x at 1 mm, scored from images: the liver cube
    (20 voxels, tolerance 5 mm) keeps DSC 17/20 and, every surface point within 3 mm <= 5 mm, NSD 1; the
    right adrenal cube (6 voxels, tolerance 2 mm) DSC 3/6 and the closed-form NSD; absent organs 1/1."""
    arr = np.zeros((30, 30, 40), np.uint8)                    # SimpleITK order (z, y, x)
    arr[2:22, 2:22, 2:22] = 1                                  # liver
    arr[23:29, 23:29, 26:32] = 7                               # right adrenal gland
    gt = sitk.GetImageFromArray(arr)
    pred = sitk.GetImageFromArray(np.roll(arr, 3, axis=2))
    s = score_case(pred, gt)
    assert (s["Liver_DSC"], s["Liver_NSD"]) == (0.85, 1.0)
    assert (s["RAG_DSC"], s["RAG_NSD"]) == (0.5, round(shifted_cube_nsd(6, 3, 1.0, 2.0), 4))
    assert {k: v for k, v in s.items() if not k.startswith(("Liver", "RAG"))} == \
        {k: 1.0 for k in csv_columns()[1:] if not k.startswith(("Liver", "RAG"))}


def test_labelmap_type_checks():
    with pytest.raises(TypeError, match="expected a path"):
        score_case(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)))
    lm = LabelMap(np.zeros((4, 4, 4), np.uint8), (1.0, 1.0, 1.0), np.eye(4), "x")
    assert score_case(lm, lm)["Liver_DSC"] == 1.0
    assert [o.short for o in ORGANS][:3] == ["Liver", "RK", "Spleen"]


def test_unreadable_ground_truth_is_reported_and_left_out(tmp_path):
    gt_dir, pred_dir = _folder_case(tmp_path)
    (gt_dir / "case_d.nii.gz").write_bytes(b"garbage")
    _write(_cube((20, 20, 20), (3, 3, 3), 10), pred_dir / "case_d.nii.gz")
    res = score_folder(pred_dir, gt_dir)
    assert "case_d.nii.gz" not in [r["Name"] for r in res.rows]
    assert "case_d.nii.gz: cannot read" in res.errors["case_d.nii.gz"]
    assert res.rows[0]["Name"] == "case_a.nii.gz" and res.rows[0]["Liver_DSC"] == 1.0
