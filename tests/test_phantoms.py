"""Synthetic phantoms: anatomy sanity (organs where expected, volumes, one piece each, little overlap),
determinism, multi-sequence behaviour, the geometry asked for, intensity orderings, dataset writing."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from flare.labels import ORGANS, dataset_json_labels
from phantoms import generate_arrays, generate_case, plan_cases, subject_seed, write_dataset
from phantoms.__main__ import main as cli_main
from phantoms.anatomy import GALLBLADDER, Canvas, make_subject
from phantoms.generate import _sequence_rng, draw_grid, draw_motion
from phantoms.geometry import NAMED_DIRECTIONS, PRESETS, resolve_direction
from phantoms.tissues import MODALITIES, T

SHORT = {o.label: o.short for o in ORGANS}
# a grid covering the whole abdomen and lower chest (420 x 330 x 340 mm) at a coarse spacing
FULL = dict(spacing=(3.0, 3.0, 4.0), size=(140, 110, 85))


def full_options(seed: int, direction: str) -> dict:
    s = make_subject(seed)
    return dict(FULL, direction=direction, center_mm=s.placement + [0.0, 12.0, 10.0])


@functools.lru_cache(maxsize=None)
def full_case(seed: int, direction: str, modality: str = "t1"):
    return generate_arrays(seed, modality, **full_options(seed, direction))


def physical_stats(label: np.ndarray, grid) -> dict:
    """label -> (centroid (3,) physical mm, z extent mm, volume mL, voxel count)."""
    m = grid.index_to_physical
    o = np.asarray(grid.origin)
    out = {}
    for organ in ORGANS:
        k, j, i = np.nonzero(label == organ.label)
        if k.size == 0:
            continue
        pts = o + (m @ np.stack([i, j, k]).astype(np.float64)).T
        out[organ.short] = dict(c=pts.mean(axis=0), zext=np.ptp(pts[:, 2]), ml=k.size * np.prod(grid.spacing) / 1e3,
                                n=k.size)
    return out


CASES = [(0, "axial"), (1, "flip_xy"), (2, "oblique"), (4, "flip_z")]


# --- anatomy ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed,direction", CASES)
def test_organs_where_expected(seed, direction):
    """Relations in physical LPS space (x to the patient's left, y posterior, z superior), whatever the
    image axes' direction."""
    _, label, grid, _ = full_case(seed, direction)
    s = physical_stats(label, grid)
    present = {o.short for o in ORGANS} - {SHORT[a] for a in make_subject(seed).absent}
    assert set(s) == present
    c = {k: v["c"] for k, v in s.items()}
    x, y, z = 0, 1, 2
    assert c["Liver"][x] < c["Aorta"][x] < c["Spleen"][x]                       # liver right, spleen left
    assert c["RK"][x] < c["Aorta"][x] < c["LK"][x]
    assert c["IVC"][x] < c["Aorta"][x]                                         # IVC right of the aorta
    assert min(c["RK"][y], c["LK"][y]) > max(c["Stomach"][y], c["Pancreas"][y], c["Liver"][y])  # kidneys posterior
    assert c["RAG"][z] > c["RK"][z] and c["LAG"][z] > c["LK"][z]               # adrenals above kidneys
    assert c["RAG"][x] < c["Aorta"][x] < c["LAG"][x]
    assert c["Liver"][z] > c["RK"][z]                                          # liver upper
    assert c["Esophagus"][z] > c["Stomach"][z] and c["Stomach"][x] > c["Aorta"][x]
    assert c["Duodenum"][x] < c["Stomach"][x] and c["Duodenum"][z] < c["Stomach"][z]
    assert abs(c["Pancreas"][x] - c["Aorta"][x]) < 45                          # across the midline
    if "Gallbladder" in c:                                                     # under the liver, anterior
        assert c["Gallbladder"][z] < c["Liver"][z] and c["Gallbladder"][y] < c["Liver"][y]
    for tube in ("Aorta", "IVC"):                                              # tubes along the body axis
        assert s[tube]["zext"] > 150


def _touching(label, a, b) -> bool:
    ma = label == a
    return bool((ndimage.binary_dilation(ma) & (label == b)).any())


@pytest.mark.parametrize("seed,direction", CASES[:2])
def test_junctions_and_tube_sizes(seed, direction):
    _, label, grid, _ = full_case(seed, direction)
    assert _touching(label, 10, 11)          # esophagus joins the stomach
    assert _touching(label, 11, 12)          # duodenum starts at the pylorus
    s = physical_stats(label, grid)
    for tube, (lo, hi) in {"Aorta": (150, 700), "IVC": (120, 900), "Esophagus": (60, 400)}.items():
        area = s[tube]["ml"] * 1e3 / s[tube]["zext"]        # mean cross-section, mm^2
        assert lo < area < hi, (tube, area)


VOLUME_ML = {"Liver": (900, 2600), "RK": (60, 260), "LK": (60, 260), "Spleen": (50, 450), "Pancreas": (30, 150),
             "Gallbladder": (8, 90), "RAG": (2, 15), "LAG": (2, 15), "Stomach": (150, 1000), "Duodenum": (40, 220)}


@pytest.mark.parametrize("seed,direction", CASES)
def test_volumes_plausible_and_each_organ_one_piece(seed, direction):
    _, label, grid, tissue = full_case(seed, direction)
    s = physical_stats(label, grid)
    for organ, (lo, hi) in VOLUME_ML.items():
        if organ in s:
            assert lo <= s[organ]["ml"] <= hi, (organ, s[organ]["ml"])
    for organ in ORGANS:
        m = label == organ.label
        if not m.any():
            continue
        cc, n = ndimage.label(m)
        assert np.bincount(cc.ravel())[1:].max() >= 0.97 * m.sum(), organ.name
    # labels only inside the body, never on air, lung or bone
    for t in ("air", "lung", "bone_cortex", "bone_marrow"):
        assert not (label[tissue == T[t]] > 0).any(), t


@pytest.mark.parametrize("seed,direction", CASES[:3])
def test_organs_barely_overlap(seed, direction):
    """Each organ keeps >= 75 % of its own shape in the final map: where shapes meet, the later organ
    only takes a rim (a single label map has no overlaps; this checks the shapes do not either)."""
    s = make_subject(seed)
    opts = full_options(seed, direction)
    _, label, grid, _ = full_case(seed, direction)
    rng = _sequence_rng(seed, "t1")
    g2 = draw_grid(rng, "t1", s, **{k: v for k, v in opts.items()})
    assert g2 == grid
    rot, shift = draw_motion(rng)
    canvas = Canvas(grid, s, rot, shift)
    everything = tuple(slice(0, n) for n in label.shape)
    for lab, shape in s.organs.items():
        intended, _ = shape.masks_on(canvas, everything)
        final = label == lab
        assert not (final & ~intended).any()
        assert final.sum() >= 0.75 * intended.sum(), (SHORT[lab], final.sum() / intended.sum())


def test_gallbladder_absent_in_some_subjects():
    """Each seed draws one uniform number and leaves the gallbladder out when it is below
    p_no_gallbladder (0.08). Seeds 0-59 give 8 such subjects (seeds 0-999: 90, 9 %)."""
    absent = [seed for seed in range(60) if GALLBLADDER in make_subject(seed).absent]
    assert absent == [0, 9, 13, 27, 31, 53, 54, 57]
    # the same draw decides at every probability: raising it only adds subjects; 0 and 1 are the ends
    likelier = [s for s in range(20) if GALLBLADDER in make_subject(s, p_no_gallbladder=0.5).absent]
    assert set(absent) & set(range(20)) < set(likelier) < set(range(20))
    assert all(GALLBLADDER in make_subject(s, p_no_gallbladder=1.0).absent for s in (1, 2, 3))
    assert not any(make_subject(s, p_no_gallbladder=0.0).absent for s in (0, 9, 13))
    assert make_subject(0, absent=()).absent == frozenset()
    _, label, _, _ = generate_arrays(5, "t2", spacing=(6.0, 6.0, 8.0), absent=(9, 7))
    assert not np.isin(label, (7, 9)).any() and (label == 1).any()


def test_variation_zero_is_the_canonical_subject():
    a = make_subject(1, variation=0.0)
    b = make_subject(2, variation=0.0)
    assert np.array_equal(a.scale, b.scale) and a.fat_mm == b.fat_mm
    assert np.allclose(a.organs[1].shape.shapes[0].center, b.organs[1].shape.shapes[0].center)


# --- determinism and multiple sequences ------------------------------------------------------------

def test_deterministic_per_seed():
    a_img, a_lab = generate_case(21, "t2", spacing=(4.0, 4.0, 6.0))
    b_img, b_lab = generate_case(21, "t2", spacing=(4.0, 4.0, 6.0))
    assert np.array_equal(sitk.GetArrayViewFromImage(a_img), sitk.GetArrayViewFromImage(b_img))
    assert np.array_equal(sitk.GetArrayViewFromImage(a_lab), sitk.GetArrayViewFromImage(b_lab))
    for attr in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(a_img, attr)() == getattr(b_img, attr)() == getattr(a_lab, attr)()
    c_img, c_lab = generate_case(22, "t2", spacing=(4.0, 4.0, 6.0))
    assert a_img.GetOrigin() != c_img.GetOrigin()
    assert subject_seed(0, 1) == subject_seed(0, 1) != subject_seed(0, 2) != subject_seed(1, 2)


def test_modalities_share_anatomy_on_one_grid():
    """Same seed, same grid, no motion: the label map does not depend on the modality."""
    s = make_subject(9)
    opts = dict(spacing=(4.0, 4.0, 6.0), size=(96, 80, 40), direction="axial", motion=False,
                center_mm=s.placement + [0, 10, 10])
    labels = [generate_arrays(9, m, **opts)[1] for m in MODALITIES]
    for lab in labels[1:]:
        assert np.array_equal(lab, labels[0])
    images = [generate_arrays(9, m, **opts)[0] for m in MODALITIES]
    assert len({float(np.mean(i)) for i in images}) == len(MODALITIES)


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_sequences_differ_by_a_small_rigid_motion_and_grid():
    """T1 and T2 of one subject: own grids, a few mm/degrees apart; resampled into one space the organs
    still overlap well but not perfectly."""
    ranges = dict(inplane_range=(2.0, 3.0), slice_range=(4.0, 7.0))
    t1_img, t1_lab = generate_case(13, "t1", **ranges)
    t2_img, t2_lab = generate_case(13, "t2", **ranges)
    assert t1_img.GetSize() != t2_img.GetSize() and t1_img.GetSpacing() != t2_img.GetSpacing()
    on_t1 = sitk.Resample(t2_lab, t1_lab, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    a, b = sitk.GetArrayFromImage(t1_lab), sitk.GetArrayFromImage(on_t1)
    for lab in (1, 2, 3, 13):
        assert 0.75 < _dice(a == lab, b == lab) < 0.995
    rot, shift = draw_motion(_sequence_rng(13, "t1"))
    angle = np.degrees(np.arccos((np.trace(rot) - 1) / 2))
    assert 0.5 <= angle <= 3.0 and np.all(np.abs(shift) <= 5.0)


# --- geometry ----------------------------------------------------------------------------------------

def test_explicit_geometry_is_honoured():
    d = NAMED_DIRECTIONS["flip_z"].ravel()
    img, lab = generate_case(3, "ct", spacing=(1.7, 1.7, 5.5), size=(64, 48, 20), origin=(-100.0, 50.0, 700.0),
                             direction=tuple(d))
    for im in (img, lab):
        assert im.GetSize() == (64, 48, 20)
        assert np.allclose(im.GetSpacing(), (1.7, 1.7, 5.5))
        assert np.allclose(im.GetOrigin(), (-100.0, 50.0, 700.0))
        assert np.allclose(im.GetDirection(), d)
    assert img.GetPixelID() == sitk.sitkInt16 and lab.GetPixelID() == sitk.sitkUInt8


def test_named_and_random_directions():
    rng = np.random.default_rng(0)
    for name, m in NAMED_DIRECTIONS.items():
        assert np.array_equal(resolve_direction(name, rng), m)
    kinds = set()
    for _ in range(200):
        d = resolve_direction("random", rng)
        assert np.allclose(d.T @ d, np.eye(3), atol=1e-9)
        if np.allclose(np.abs(d), np.eye(3)):
            kinds.add("axial" if np.allclose(d, np.eye(3)) else "flip")
        else:
            kinds.add("oblique")
    assert kinds == {"axial", "flip", "oblique"}
    ob = resolve_direction("oblique", rng)
    tilt = np.degrees(np.arccos(np.clip(ob[2, 2], -1, 1)))
    angle = np.degrees(np.arccos((np.trace(ob) - 1) / 2))
    assert 6.0 - 1e-6 <= angle <= 20.0 + 1e-6 and tilt <= angle + 1e-6
    with pytest.raises(ValueError, match="not orthonormal"):
        resolve_direction([1, 0, 0, 0, 2, 0, 0, 0, 1], rng)
    with pytest.raises(ValueError, match="unknown direction"):
        resolve_direction("sagittal", rng)


def test_flipped_grid_sees_the_same_anatomy():
    """A flip_xy grid with the same centre samples the same physical points in reverse order."""
    s = make_subject(6)
    opts = dict(spacing=(4.0, 4.0, 6.0), size=(90, 70, 40), motion=False, center_mm=s.placement + [0, 10, 10])
    _, a, _, _ = generate_arrays(6, "t1", direction="axial", **opts)
    _, b, _, _ = generate_arrays(6, "t1", direction="flip_xy", **opts)
    assert (a == b[:, ::-1, ::-1]).mean() > 0.999


@pytest.mark.parametrize("modality", MODALITIES)
def test_drawn_grids_are_realistic(modality):
    preset = PRESETS[modality]
    origins = []
    for seed in range(4):
        img, _ = generate_case(seed, modality, size=(8, 8, 8))       # tiny: only the spacing is drawn
        sx, sy, sz = img.GetSpacing()
        assert sx == sy and preset.inplane_mm[0] <= sx <= preset.inplane_mm[1]
        assert preset.slice_mm[0] <= sz <= preset.slice_mm[1]
        assert 0.6 <= sx <= 2.0 and 1.0 <= sz <= 8.0
        origins.append(img.GetOrigin())
    assert len(set(origins)) == 4
    s = make_subject(1)
    g = draw_grid(_sequence_rng(1, modality), modality, s)
    fov = np.asarray(g.size) * np.asarray(g.spacing)
    assert 300 <= fov[0] <= 600 and 250 <= fov[1] <= 600 and 150 <= fov[2] <= 330
    assert np.prod(g.size) <= 12_000_000 * 1.01
    g2 = draw_grid(_sequence_rng(1, modality), modality, s, inplane_range=(1.5, 2.5), slice_range=(3.0, 6.0))
    assert 1.5 <= g2.spacing[0] <= 2.5 and 3.0 <= g2.spacing[2] <= 6.0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown modality"):
        generate_case(1, "pet")
    with pytest.raises(ValueError, match="spacing must be 3 positive"):
        generate_case(1, "t1", spacing=(1.0, 0.0, 1.0))


# --- intensities ---------------------------------------------------------------------------------------

def _tissue_means(img, tissue):
    out = {}
    for name, t in T.items():
        m = ndimage.binary_erosion(tissue == t, iterations=1)
        if m.sum() > 30:
            out[name] = float(img[m].mean())
    return out


@pytest.mark.parametrize("modality", MODALITIES)
def test_each_modality_has_its_own_intensity_order(modality):
    img, _, _, tissue = full_case(1, "axial", modality)
    t = _tissue_means(img, tissue)
    orders = {
        "ct": [("artery", "liver"), ("liver", "muscle"), ("muscle", "visceral_fat"), ("visceral_fat", "lung")],
        "t1": [("subcut_fat", "liver"), ("liver", "spleen"), ("liver", "bile"), ("pancreas", "liver")],
        "t2": [("bile", "spleen"), ("spleen", "liver"), ("liver", "artery"), ("csf", "liver")],
        "t1c": [("artery", "liver"), ("kidney_cortex", "kidney_medulla"), ("liver", "visceral_fat")],
        "dwi": [("spleen", "liver"), ("kidney_cortex", "liver"), ("liver", "visceral_fat")],
    }[modality]
    for hi, lo in orders:
        assert t[hi] > t[lo], (modality, hi, t[hi], lo, t[lo])
    air = img[tissue == T["air"]]
    if modality == "ct":
        assert abs(air.mean() + 1000) < 15 and img.min() >= -1024
    else:   # Rician noise: magnitude images, a positive noise floor outside the body
        assert img.min() >= 0 and 0 < air.mean() < 0.3 * t["liver"]


def test_partial_volume_blur_gives_intermediate_boundary_values():
    img, label, _, tissue = full_case(0, "axial", "ct")
    liver = label == 1
    rim = liver & ~ndimage.binary_erosion(liver)
    core = ndimage.binary_erosion(liver, iterations=2)
    assert img[rim].mean() < img[core].mean() - 10    # liver (~105 HU) blurred with fat at the rim


# --- dataset and CLI ---------------------------------------------------------------------------------------

def test_write_dataset_layout(tmp_path):
    ids = write_dataset(tmp_path / "ds", 2, ["ct", "t1"], seed=4, spacing=(6.0, 6.0, 8.0), progress=False)
    assert ids == ["phantom_0001", "phantom_0002"]
    ds = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert ds["labels"] == dataset_json_labels() and ds["numTraining"] == 2
    assert ds["file_ending"] == ".nii.gz" and ds["channel_names"] == {"0": "MRI"}
    img = sitk.ReadImage(str(tmp_path / "ds" / "imagesTr" / "phantom_0002_0000.nii.gz"))
    lab = sitk.ReadImage(str(tmp_path / "ds" / "labelsTr" / "phantom_0002.nii.gz"))
    ref_img, ref_lab = generate_case(subject_seed(4, 2), "t1", spacing=(6.0, 6.0, 8.0))
    assert np.array_equal(sitk.GetArrayViewFromImage(lab), sitk.GetArrayViewFromImage(ref_lab))
    assert np.array_equal(sitk.GetArrayViewFromImage(img), sitk.GetArrayViewFromImage(ref_img))
    assert np.allclose(img.GetOrigin(), ref_img.GetOrigin(), atol=1e-4)
    write_dataset(tmp_path / "ct", 1, "ct", seed=4, spacing=(6.0, 6.0, 8.0), progress=False)
    assert json.loads((tmp_path / "ct" / "dataset.json").read_text())["channel_names"] == {"0": "CT"}
    assert not list((tmp_path / "ds").rglob(".tmp_*"))


def test_plan_cases_sequences_share_subjects():
    cases = plan_cases(2, "t1,t2", seed=0, all_sequences=True)
    assert [c[0] for c in cases] == ["phantom_0001_t1", "phantom_0001_t2", "phantom_0002_t1", "phantom_0002_t2"]
    assert cases[0][1] == cases[1][1] != cases[2][1]
    cycled = plan_cases(3, ["ct", "t2"], seed=0, first=10)
    assert [(c[0], c[2]) for c in cycled] == [("phantom_0010", "ct"), ("phantom_0011", "t2"), ("phantom_0012", "ct")]
    with pytest.raises(ValueError, match="unknown modality"):
        plan_cases(1, "xray", seed=0)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(["-o", str(out), "-n", "1", "--sequences", "t1,dwi", "--seed", "3", "--spacing", "6,6,8",
                   "--direction", "oblique", "-q", "--subset", "Ts"])
    assert rc == 0
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["phantom_0001_dwi_0000.nii.gz",
                                                                     "phantom_0001_t1_0000.nii.gz"]
    img = sitk.ReadImage(str(out / "imagesTs" / "phantom_0001_t1_0000.nii.gz"))
    assert not np.allclose(np.abs(img.GetDirection()), np.eye(3).ravel())
    assert cli_main(["-o", str(out), "-n", "1", "--modality", "pet", "-q"]) == 2
    assert "unknown modality" in capsys.readouterr().err


# --- committed sample cases -------------------------------------------------------------------------------

def test_committed_samples_match_their_command():
    """samples/ holds what `python -m phantoms.samples` writes (labels equal up to a handful of voxels,
    which float rounding on another CPU could flip; images nearly equal), in a few MB."""
    import os

    from phantoms.samples import DEFAULT_DIR, SAMPLES, sample_case

    total = 0
    for cid, _, _, _ in SAMPLES:
        img_path = os.path.join(DEFAULT_DIR, "inputs", f"{cid}_0000.nii.gz")
        lab_path = os.path.join(DEFAULT_DIR, "labels", f"{cid}.nii.gz")
        total += os.path.getsize(img_path) + os.path.getsize(lab_path)
        img, lab = sitk.ReadImage(img_path), sitk.ReadImage(lab_path)
        new_img, new_lab = sample_case(cid)
        assert img.GetSize() == new_img.GetSize() == lab.GetSize()
        assert np.allclose(img.GetDirection(), new_img.GetDirection(), atol=1e-6)
        assert np.allclose(img.GetOrigin(), new_img.GetOrigin(), atol=1e-3)
        a, b = sitk.GetArrayViewFromImage(lab), sitk.GetArrayViewFromImage(new_lab)
        assert (a == b).mean() > 0.9995 and set(np.unique(a)) <= set(range(14))
        diff = np.abs(sitk.GetArrayViewFromImage(img).astype(np.int32) - sitk.GetArrayViewFromImage(new_img))
        assert diff.mean() < 1.0
    assert total < 8e6
    d1 = np.asarray(sitk.ReadImage(os.path.join(DEFAULT_DIR, "inputs", "phantom_0001_0000.nii.gz")).GetDirection())
    d3 = np.asarray(sitk.ReadImage(os.path.join(DEFAULT_DIR, "inputs", "phantom_0003_0000.nii.gz")).GetDirection())
    assert not np.allclose(np.abs(d1), np.eye(3).ravel())                 # oblique
    assert np.allclose(d3, np.diag([-1.0, -1.0, 1.0]).ravel())            # flipped x and y
    assert SAMPLES[0][1] == SAMPLES[1][1] != SAMPLES[2][1]               # 0001 and 0002: one subject


# --- large fields of view -------------------------------------------------------------------------------

def _organ_box_fraction(label: np.ndarray) -> float:
    nz = np.nonzero(label)
    return float(np.prod([a.max() - a.min() + 1 for a in nz]) / label.size)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_large_field_is_chest_to_pelvis_with_air_around(seed):
    """field="large": 400-480 mm each way, the organs (all 13 labels present) in a small part of it,
    lung above and air around the body, deterministic per seed."""
    img, lab, grid, tissue = generate_arrays(seed, "t1", field="large", inplane_range=(3.0, 3.5),
                                             slice_range=(5.0, 6.0))
    fov = np.asarray(grid.size) * np.asarray(grid.spacing)
    assert np.all(fov >= 395) and np.all(fov <= 490), fov
    assert fov[0] == pytest.approx(fov[1], rel=0.02)
    assert set(np.unique(lab)) >= set(range(1, 14)) - {GALLBLADDER}
    assert 0.05 < _organ_box_fraction(lab) < 0.35
    assert (tissue == T["air"]).mean() > 0.3            # much more air than an abdomen slab
    assert (tissue == T["lung"]).any()                  # the chest is in the field
    img2, lab2, grid2, _ = generate_arrays(seed, "t1", field="large", inplane_range=(3.0, 3.5),
                                           slice_range=(5.0, 6.0))
    assert grid2 == grid and np.array_equal(lab2, lab) and np.array_equal(img2, img)


def test_large_field_drawn_grid_fits_the_larger_voxel_cap():
    s = make_subject(3)
    g = draw_grid(_sequence_rng(3, "t1"), "t1", s, field="large")
    assert max(g.size[:2]) <= 512 and 12_000_000 < np.prod(g.size) <= 30_000_000 * 1.01
    abdomen = draw_grid(_sequence_rng(3, "t1"), "t1", s)        # the default field is unchanged
    assert abdomen == draw_grid(_sequence_rng(3, "t1"), "t1", s, field="abdomen")
    assert np.prod(np.asarray(abdomen.size) * abdomen.spacing) < np.prod(np.asarray(g.size) * g.spacing) / 2
    with pytest.raises(ValueError, match="unknown field"):
        draw_grid(_sequence_rng(3, "t1"), "t1", s, field="whole_body")


def test_cli_large_field_and_fixed_fov(tmp_path):
    out = tmp_path / "large"
    assert cli_main(["-o", str(out), "-n", "1", "--field", "large", "--spacing", "8,8,8", "-q"]) == 0
    img = sitk.ReadImage(str(out / "imagesTr" / "phantom_0001_0000.nii.gz"))
    assert all(400 <= n * s <= 490 for n, s in zip(img.GetSize(), img.GetSpacing()))
    assert cli_main(["-o", str(out), "-n", "1", "--fov", "200,160,120", "--spacing", "8,8,8", "-q"]) == 0
    img = sitk.ReadImage(str(out / "imagesTr" / "phantom_0001_0000.nii.gz"))
    assert img.GetSize() == (25, 20, 15)
