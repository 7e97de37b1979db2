"""ROI-first prediction (inference/roi.py): import of a localiser, the box it gives, fall-backs, and
results that equal the whole-image (--no-roi) labels inside the box, term for term, on both engines,
with background outside it and fewer tiles run.

The localiser is a real imported nnU-Net model folder (random weights, 2 labels) whose networks are
replaced, after loading, by a controllable one: foreground where the normalised intensity exceeds a
threshold. Everything around it (preprocessing, crop, transposition, resampling, sliding window,
box mapping, widening, clipping, pasting) is the predictor's own.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from testsupport.model_folder import write_preset
from inference import InferenceError
from inference.api import segment_array, segment_folder
from inference.engines.choice import IR_BIN, IR_XML, openvino_installed
from inference.files.cases import Case
from inference.files.reading import read_case
from inference.model.manifest import sha256_of
from inference.loading import load_model
from inference.loading import load_localizer
from inference.roi import RoiSettings, decide_box, foreground_box, si_axis, widen_box
from inference.engines.base import Window
from inference.timings import StageTimer
from inference.weights import import_model
from inference.weights import main as weights_main
from testsupport.nnunet_reference import oblique_direction, write_image

REPO = Path(__file__).resolve().parent.parent
needs_openvino = pytest.mark.skipif(not openvino_installed(), reason="openvino not installed")

SPACING = (6.0, 3.0, 3.0)            # (z, y, x) mm: images and the main model's target spacing
REPO = Path(__file__).resolve().parent.parent
# SimpleITK direction cosines (row-major; column j: patient direction of image axis j, sitk order x, y, z)
AXIAL = (1, 0, 0, 0, 1, 0, 0, 0, 1)
CORONAL = (1, 0, 0, 0, 0, 1, 0, -1, 0)          # image y runs inferior: array axis 1 is S-I
SAGITTAL_SI_FIRST = (0, 0, 1, 0, 1, 0, 1, 0, 0)  # image x runs superior: array axis 2 is S-I
SHAPE = (24, 64, 64)                  # 144 x 192 x 192 mm; the main model's patch is 96 mm each way
BLOCK = (slice(8, 16), slice(16, 31), slice(30, 45))      # 48 x 45 x 45 mm


class ThresholdNet(torch.nn.Module):
    """Two-class 'localiser': logit of class 1 = channel-0 intensity - threshold."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        fg = x[:, :1] - self.threshold
        if isinstance(x, np.ndarray):   # a localiser on OpenVINO runs on the torch-free path (the numpy engine, inference.engines.numpy_engine)
            return np.concatenate([np.zeros_like(fg), fg], 1)
        return torch.cat([torch.zeros_like(fg), fg], 1)


def image_with_block(block, shape=SHAPE, channels=1, seed=0) -> np.ndarray:
    """(C, Z, Y, X) noise on a body-like level with one bright block (slices `block`)."""
    rng = np.random.default_rng(seed)
    img = (100.0 + rng.normal(0, 10, (channels, *shape))).astype(np.float32)
    img[(slice(None), *block)] += 400.0
    return img


def edit_json(path: Path, edit) -> None:
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


def model_with_localizer(tmp_path, *, channels=1, loc_plans_edit=None, main_dataset_edit=None,
                         main_plans_edit=None, loc_channels=None, threshold=2.0, name="model", backend="auto"):
    main = write_preset(tmp_path / f"{name}_main", "tiny", num_input_channels=channels, spacing=SPACING)
    if main_dataset_edit:
        edit_json(main / "dataset.json", main_dataset_edit)
    if main_plans_edit:
        edit_json(main / "plans.json", main_plans_edit)
    loc = write_preset(tmp_path / f"{name}_loc", "tiny", num_input_channels=loc_channels or channels,
                       num_classes=2, spacing=(6.0, 6.0, 6.0), patch_size=(8, 16, 16))
    if loc_plans_edit:
        plans = json.loads((loc / "plans.json").read_text())
        loc_plans_edit(plans)
        (loc / "plans.json").write_text(json.dumps(plans))
    dest = import_model(main, tmp_path / name, localizer=loc)
    model = load_model(dest, backend=backend)
    model.localizer.networks = [ThresholdNet(threshold)]
    return model


def without_localizer(model):
    from dataclasses import replace
    return replace(model, localizer=None)


def box_saves_tiles(image, model, box, spacing=SPACING) -> bool:
    """Whether the box meets fewer of the whole image's tiles than all (else the whole image runs)."""
    from inference.api import _saves_tiles
    from inference.rules.region import network_region
    prep = model.engine.preprocess(image, spacing, model, "image")
    region = network_region(box, model.transpose_forward, prep.bbox, tuple(prep.data.shape[1:]))
    return _saves_tiles(region, model, Window())


def whole_inside_box(image, model, box, spacing=SPACING):
    """The expected ROI result: the whole-image (--no-roi) labels inside the box, zeros elsewhere,
    whether the box saved tiles or met them all (then the whole image ran)."""
    whole = segment_array(image, spacing, without_localizer(model))
    full = np.zeros_like(whole)
    full[box] = whole[box]
    return full


# --- import ---------------------------------------------------------------------------------------

def test_import_with_localizer_manifest_and_tamper_check(tmp_path, capsys):
    main = write_preset(tmp_path / "main", "tiny", spacing=SPACING)
    loc = write_preset(tmp_path / "loc", "tiny", num_classes=2, spacing=(6.0, 6.0, 6.0), patch_size=(8, 16, 16))
    assert weights_main(["import", str(main), "-o", str(tmp_path / "w"), "--localizer", str(loc)]) == 0
    assert "localizer" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert {"localizer/dataset.json", "localizer/plans.json",
            "localizer/fold_all/checkpoint_final.pth"} <= set(manifest["files"])
    assert manifest["localizer"]["spacing"] == [6.0, 6.0, 6.0]
    model = load_model(tmp_path / "w")
    assert model.localizer is not None and model.localizer.num_classes == 2
    assert model.localizer.config.spacing == (6.0, 6.0, 6.0)
    # re-import of an imported folder carries the localizer along
    import_model(tmp_path / "w", tmp_path / "w2")
    assert load_model(tmp_path / "w2").localizer is not None
    # a changed localizer file is refused, naming it
    plans = tmp_path / "w" / "localizer" / "plans.json"
    plans.write_text(plans.read_text().replace('"batch_size": 2', '"batch_size": 3'))
    with pytest.raises(InferenceError, match="localizer/plans.json: sha256 differs"):
        load_model(tmp_path / "w")
    # without a localizer nothing changes
    assert load_model(main).localizer is None


def test_import_refuses_a_localizer_with_other_inputs(tmp_path):
    main = write_preset(tmp_path / "main", "tiny", num_input_channels=2, spacing=SPACING)
    loc = write_preset(tmp_path / "loc", "tiny", num_classes=2, spacing=(6.0, 6.0, 6.0), patch_size=(8, 16, 16))
    with pytest.raises(InferenceError, match="localizer takes 1 image"):
        import_model(main, tmp_path / "w", localizer=loc)
    with pytest.raises(InferenceError, match="localizer model folder not found"):
        import_model(main, tmp_path / "w", localizer=tmp_path / "nowhere")
    assert not (tmp_path / "w").exists()


LOC_IR = [f"localizer/fold_all/{IR_XML}", f"localizer/fold_all/{IR_BIN}"]


@needs_openvino
def test_localizer_ir_at_import_and_by_weights_ir(tmp_path, capsys):
    main = write_preset(tmp_path / "main", "tiny", spacing=SPACING)
    loc = write_preset(tmp_path / "loc", "tiny", num_classes=2, spacing=(6.0, 6.0, 6.0), patch_size=(8, 16, 16))
    # --no-ir: neither the model nor the localizer gets IR; both run on torch
    assert weights_main(["import", str(main), "-o", str(tmp_path / "w"), "--localizer", str(loc), "--no-ir"]) == 0
    assert not list((tmp_path / "w").rglob(IR_XML))
    model = load_model(tmp_path / "w")
    assert (model.plan.backend, model.localizer.plan.backend) == ("torch", "torch")
    # `ir` adds it to both, and to the manifest
    capsys.readouterr()
    assert weights_main(["ir", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in LOC_IR)
    listed = json.loads((tmp_path / "w" / "manifest.json").read_text())["files"]
    for name in LOC_IR + [f"fold_all/{IR_XML}", f"fold_all/{IR_BIN}"]:
        assert listed[name] == sha256_of(tmp_path / "w" / name)
    model = load_model(tmp_path / "w")
    assert (model.plan.backend, model.localizer.plan.backend) == ("openvino", "openvino")
    assert not [p for p in (tmp_path / "w" / "localizer" / "fold_all").iterdir() if p.name.startswith(".")]
    # a plain import writes it too, under the manifest
    assert weights_main(["import", str(main), "-o", str(tmp_path / "w2"), "--localizer", str(loc)]) == 0
    manifest = json.loads((tmp_path / "w2" / "manifest.json").read_text())
    assert set(LOC_IR) <= set(manifest["files"]) and manifest["localizer"]["openvino_ir"] is True
    assert load_localizer(tmp_path / "w2", "cpu").plan.backend == "openvino"


@needs_openvino
def test_changed_or_unlisted_localizer_ir_is_refused(tmp_path):
    from inference.weights import write_localizer_ir
    main = write_preset(tmp_path / "main", "tiny", spacing=SPACING)
    loc = write_preset(tmp_path / "loc", "tiny", num_classes=2, spacing=(6.0, 6.0, 6.0), patch_size=(8, 16, 16))
    dest = import_model(main, tmp_path / "w", localizer=loc)
    changed = shutil.copytree(dest, tmp_path / "changed")
    with open(changed / "localizer" / "fold_all" / IR_BIN, "r+b") as f:
        f.seek(100)
        f.write(b"\x7f\x7f\x7f\x7f")
    with pytest.raises(InferenceError, match=r"changed/localizer/fold_all/network.bin: sha256 differs"):
        load_localizer(changed, "cpu")
    with pytest.raises(InferenceError, match=r"localizer/fold_all/network.bin: sha256 differs"):
        load_model(changed)
    # torch never reads the IR: the localiser still loads there
    assert load_localizer(changed, "cpu", backend="torch").plan.backend == "torch"
    # IR put into a folder after import, outside the manifest, is refused too
    unlisted = import_model(main, tmp_path / "unlisted", localizer=loc, ir=False)
    write_localizer_ir(unlisted)
    with pytest.raises(InferenceError, match=r"unlisted/localizer/fold_all/network.xml: not listed in"):
        load_localizer(unlisted, "cpu")


@needs_openvino
def test_default_localizer_ir_gives_the_torch_box_on_a_sample():
    """The shipped localiser (weights/localizer/, with its IR under weights/manifest.json) finds the same
    box on OpenVINO as on torch, on a committed sample."""
    weights = REPO / "weights"
    listed = json.loads((weights / "manifest.json").read_text())["files"]
    assert set(LOC_IR) <= set(listed)
    on_openvino = load_localizer(weights, "cpu", precision="fp32")   # verified against the manifest; fp32 as torch
    on_torch = load_localizer(weights, "cpu", backend="torch")
    assert (on_openvino.plan.backend, on_torch.plan.backend) == ("openvino", "torch")
    case = read_case(Case("phantom_0001", [REPO / "samples" / "inputs" / "phantom_0001_0000.nii.gz"]))
    box, ml = foreground_box(case.data, case.spacing, on_openvino)
    assert box is not None and ml > 0
    assert (box, ml) == foreground_box(case.data, case.spacing, on_torch)


# --- the box --------------------------------------------------------------------------------------

def test_box_contains_the_organs_and_result_is_the_whole_image_inside_it(tmp_path):
    model = model_with_localizer(tmp_path)
    block = BLOCK
    image = image_with_block(block)
    decision = decide_box(image, SPACING, model)
    assert decision.reason == "box" and 0.1 < decision.fraction < 0.5
    assert decision.foreground_ml == pytest.approx(48 * 45 * 45 / 1000, rel=0.5)
    # the cranio-caudal axis (axial array: the first) keeps the whole image; the in-plane axes are
    # cropped to block + margin (+ the localiser's 6 mm cells)
    assert decision.box[0] == slice(0, SHAPE[0])
    for sl, b, s in zip(decision.box[1:], block[1:], SPACING[1:]):
        margin = int(np.ceil(20.0 / s))
        assert sl.start <= b.start - margin + 1 and sl.stop >= b.stop + margin - 1   # block + margin inside
        assert sl.start >= b.start - margin - 2 * int(np.ceil(6.0 / s)) - 2            # ... not much more
    timer = StageTimer()
    labels = segment_array(image, SPACING, model, timer=timer)
    assert "localize" in timer.seconds and list(timer.seconds)[0] == "localize"
    # on this small image (3 tiles per in-plane axis) the box meets every tile: the whole image runs,
    # at the same cost, and the box is kept (outside it: background)
    assert not box_saves_tiles(image, model, decision.box)
    assert np.array_equal(labels, whole_inside_box(image, model, decision.box))


ENGINES = [pytest.param("auto", id="numpy-openvino", marks=needs_openvino), pytest.param("torch", id="torch")]


def transpose_plans(plans):
    plans["transpose_forward"], plans["transpose_backward"] = [2, 0, 1], [1, 2, 0]


def body_image(shape, block) -> np.ndarray:
    """image_with_block with zero rows and columns at two borders, so that the crop to nonzero moves
    the grid and the box reaches past the crop."""
    image = image_with_block(block, shape)
    image[:, :, :5, :] = 0
    image[:, :, :, -4:] = 0
    return image


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("spacing,shape,transpose", [
    ((5.0, 2.0, 2.0), (30, 160, 160), False),    # resampled on every axis, linearly
    ((10.0, 2.0, 2.0), (8, 160, 160), True),     # anisotropic: nearest-exact along one axis; fewer voxels
])                                               # than the patch there (padded); plans that transpose
def test_roi_labels_are_the_whole_image_labels_inside_the_box_from_fewer_tiles(
        tmp_path, monkeypatch, backend, spacing, shape, transpose):
    """The key property: the same preprocessing and tile grid as the whole image, only the tiles that
    meet the box run, so inside the box the labels are --no-roi's exactly; outside, background."""
    model = model_with_localizer(tmp_path, backend=backend, main_plans_edit=transpose_plans if transpose else None)
    assert model.engine.name == ("torch" if backend == "torch" else "numpy")
    block = (slice(shape[0] // 3, 2 * shape[0] // 3), slice(70, 90), slice(60, 80))
    image = body_image(shape, block)
    monkeypatch.setattr("inference.roi.foreground_box", lambda *a: ([(b.start, b.stop) for b in block], 500.0))
    decision = decide_box(image, spacing, model)
    assert decision.reason == "box" and decision.fraction < 0.3
    roi_tiles, whole_tiles = [], []
    roi = segment_array(image, spacing, model, progress=lambda *done_total: roi_tiles.append(done_total))
    whole = segment_array(image, spacing, without_localizer(model),
                          progress=lambda *done_total: whole_tiles.append(done_total))
    assert roi.shape == whole.shape == shape and roi.dtype == whole.dtype
    assert len(np.unique(whole[decision.box])) > 2                  # something to compare
    assert np.array_equal(roi[decision.box], whole[decision.box])
    outside = np.ones(shape, bool)
    outside[decision.box] = False
    assert whole[outside].any() and not roi[outside].any()
    # progress counts the tiles run: fewer than the whole image's
    assert roi_tiles == [(i, len(roi_tiles)) for i in range(1, len(roi_tiles) + 1)]
    assert whole_tiles[-1] == (len(whole_tiles), len(whole_tiles))
    assert len(roi_tiles) < len(whole_tiles)


# --- the box grid (RoiSettings(grid="box"), --roi-grid box) -----------------------------------------

def _conv_network(seed: int = 0) -> torch.nn.Module:
    """A fixed random 3-class convolution: its logits depend on where a tile starts (zero padding)."""
    torch.manual_seed(seed)
    return torch.nn.Conv3d(1, 3, 3, padding=1).eval()


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize("region,grown", [
    (((3, 17), (10, 40), (12, 30)), ((3, 17), (10, 40), (12, 30))),
    (((3, 9), (10, 40), (12, 30)), ((2, 10), (10, 40), (12, 30))),     # narrower than the tile: grown centred
    (((0, 4), (44, 50), (12, 30)), ((0, 8), (34, 50), (12, 30))),      # and kept inside the image
])
def test_box_grid_is_the_sliding_window_of_the_region_alone(engine, region, grown):
    """grid "box" runs the tiles a crop to the region would run: its logits equal the sliding window of
    the cropped data, exactly, on both engines' sliding windows."""
    from inference.engines.numpy_engine import sliding_window as np_window
    from inference.engines.torch_engine import sliding_window as torch_window
    from inference.rules.tiling import tiles_meeting
    network, patch = _conv_network(), (8, 16, 16)
    data = np.random.default_rng(1).normal(size=(1, 20, 50, 60)).astype(np.float32)
    crop = (slice(None), *(slice(lo, hi) for lo, hi in grown))

    def numpy_network(tiles: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(np.ascontiguousarray(tiles))).numpy()

    def run(array, **where):
        with torch.inference_mode():
            if engine == "numpy":
                return np_window.predict_logits(array, [numpy_network], 3, patch, 0.5, **where)
            return torch_window.predict_logits(torch.from_numpy(array), [network], 3, patch, 0.5, **where)

    boxed = run(data, region=region, grid="box")
    expected = run(np.ascontiguousarray(data[crop]))
    assert boxed.start == tuple(lo for lo, _ in grown)
    assert np.array_equal(np.asarray(boxed.data), np.asarray(expected))
    assert tiles_meeting(data.shape[1:], patch, 0.5, region, "box") == tiles_meeting(
        [hi - lo for lo, hi in grown], patch, 0.5)
    with pytest.raises(ValueError, match="grid must be one of"):
        tiles_meeting(data.shape[1:], patch, 0.5, region, "crop")
    with pytest.raises(ValueError, match="ROI grid must be one of"):
        RoiSettings(grid="crop")


@pytest.mark.parametrize("backend", ENGINES)
def test_box_grid_runs_fewer_tiles_where_the_whole_grid_saves_none(tmp_path, monkeypatch, backend):
    """A centred box on a field about two patches wide meets every tile of the whole image's grid (so
    grid "whole" runs them all); grid "box" runs fewer, and both keep background outside the box."""
    shape, spacing = (30, 160, 160), (5.0, 2.0, 2.0)
    model = model_with_localizer(tmp_path, backend=backend)
    block = (slice(10, 20), slice(55, 105), slice(55, 105))
    image = body_image(shape, block)
    monkeypatch.setattr("inference.roi.foreground_box", lambda *a: ([(b.start, b.stop) for b in block], 500.0))
    counts, labels = {}, {}
    for grid in ("whole", "box"):
        seen = []
        labels[grid] = segment_array(image, spacing, model, roi_settings=RoiSettings(grid=grid),
                                     progress=lambda *done_total: seen.append(done_total))
        counts[grid] = len(seen)
    whole_tiles = []
    segment_array(image, spacing, without_localizer(model), progress=lambda *dt: whole_tiles.append(dt))
    assert counts["whole"] == len(whole_tiles) and counts["box"] < counts["whole"]
    box = decide_box(image, spacing, model).box
    outside = np.ones(shape, bool)
    outside[box] = False
    for grid in ("whole", "box"):
        assert labels[grid].shape == shape and not labels[grid][outside].any() and labels[grid][box].any()


@pytest.mark.parametrize("n_crop,n_net", [(95, 67), (67, 95), (8, 27), (200, 41), (41, 200), (64, 64), (1, 3)])
def test_network_region_holds_every_source_the_export_reads(n_crop, n_net):
    """For any output box, the export's source positions (linear: lower and upper; nearest-exact) lie
    inside the mapped network box, and the halo around them is small."""
    from inference.engines.numpy_engine.resample import AxisResampler
    from inference.rules.region import EXPORT_HALO, network_region
    linear, nearest = AxisResampler(n_net, n_crop, False), AxisResampler(n_net, n_crop, True)
    for lo in range(n_crop):
        for hi in range(lo + 1, n_crop + 1, max(1, n_crop // 7)):
            region = network_region([slice(lo + 3, hi + 3)], [0], [(3, 3 + n_crop)], [n_net])
            assert region.cropped == ((lo, hi),)
            (a, b), = region.network
            sources = np.concatenate([linear.lower[lo:hi], linear.upper[lo:hi], nearest.lower[lo:hi]])
            assert a <= sources.min() and sources.max() < b, (lo, hi)
            assert b - a <= np.ceil((hi - lo) * n_net / n_crop) + 2 * EXPORT_HALO + 1
    assert network_region([slice(0, 3)], [0], [(3, 3 + n_crop)], [n_net]) is None    # before the crop


def test_localizer_finds_nothing_falls_back_to_the_whole_image(tmp_path):
    model = model_with_localizer(tmp_path, threshold=1e6)
    image = image_with_block(BLOCK)
    decision = decide_box(image, SPACING, model)
    assert decision.box is None and decision.reason == "localizer found no foreground"
    assert np.array_equal(segment_array(image, SPACING, model), segment_array(image, SPACING, without_localizer(model)))


def test_implausibly_little_and_box_covering_most_fall_back(tmp_path):
    model = model_with_localizer(tmp_path)
    small = image_with_block((slice(12, 13), slice(30, 32), slice(30, 32)))       # 6 x 6 x 6 mm
    decision = decide_box(small, SPACING, model)
    assert decision.box is None and "mL" in decision.reason
    big = image_with_block((slice(1, 23), slice(3, 61), slice(3, 61)))
    model.localizer.networks = [ThresholdNet(0.0)]           # the block is most of the image's mean
    decision = decide_box(big, SPACING, model)
    assert decision.box is None and "of the image" in decision.reason and decision.fraction > 0.8


def test_box_at_the_image_border_is_clipped(tmp_path):
    model = model_with_localizer(tmp_path)
    block = (slice(0, 8), slice(49, 64), slice(0, 15))           # touches three borders
    image = image_with_block(block)
    decision = decide_box(image, SPACING, model)
    assert decision.box is not None
    assert decision.box[0] == slice(0, SHAPE[0]) and decision.box[1].stop == 64 and decision.box[2].start == 0
    assert decision.box[1].start > 0 and decision.box[2].stop < 64
    assert all(0 <= sl.start < sl.stop <= n for sl, n in zip(decision.box, SHAPE))
    assert np.array_equal(segment_array(image, SPACING, model), whole_inside_box(image, model, decision.box))


def rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@pytest.mark.parametrize("direction,expected", [
    (AXIAL, 0), (None, 0),                                        # None: an axial array
    ((-1, 0, 0, 0, -1, 0, 0, 0, 1), 0),                           # LPS <-> RAS flip in-plane
    ((1, 0, 0, 0, 1, 0, 0, 0, -1), 0),                            # slices stored head first
    (CORONAL, 1), ((1, 0, 0, 0, 0, -1, 0, 1, 0), 1),              # coronal, either way up
    (SAGITTAL_SI_FIRST, 2),
    ((0, 0, -1, 1, 0, 0, 0, -1, 0), 1),                           # sagittal as scanners store it (y: S-I)
    (tuple(rotation(0, 30.0).flatten()), 0),                      # oblique: 30 degrees off axial
    (tuple(rotation(0, 60.0).flatten()), 1),                      # 60 degrees off axial: nearer coronal
    (tuple(rotation(1, 70.0).flatten()), 2),                      # 70 degrees about y: image x nearer S-I
    (tuple(rotation(0, 45.0).flatten()), 0),                      # a tie goes to the first array axis
])
def test_si_axis_from_direction_cosines(direction, expected):
    assert si_axis(direction) == expected


def test_si_axis_refuses_a_malformed_direction():
    with pytest.raises(ValueError, match="9 finite numbers"):
        si_axis((1, 0, 0, 0, 1, 0))
    with pytest.raises(ValueError, match="9 finite numbers"):
        si_axis((1, 0, 0, 0, 1, 0, 0, 0, float("nan")))


@pytest.mark.parametrize("direction,si", [(AXIAL, 0), (CORONAL, 1), (SAGITTAL_SI_FIRST, 2)])
def test_box_keeps_the_cranio_caudal_extent_and_crops_the_others(tmp_path, monkeypatch, direction, si):
    """Whatever the localiser finds, the box spans the whole S-I axis; the other two axes are the
    widened, clipped localiser box (widen_box)."""
    model = model_with_localizer(tmp_path)
    image = image_with_block(BLOCK)
    found = [(8, 16), (16, 31), (30, 45)]
    monkeypatch.setattr("inference.roi.foreground_box", lambda *a: (list(found), 500.0))
    from inference.roi import patch_extent_mm
    widened = widen_box(found, SHAPE, SPACING, 20.0, patch_extent_mm(model))
    decision = decide_box(image, SPACING, model, direction=direction)
    assert decision.reason == "box"
    expected = [(0, SHAPE[a]) if a == si else widened[a] for a in range(3)]
    assert decision.box == tuple(slice(a, b) for a, b in expected)
    assert all(widened[a] != (0, SHAPE[a]) for a in range(3))      # each axis would be cropped
    assert decision.fraction == pytest.approx(np.prod([b - a for a, b in expected]) / np.prod(SHAPE))
    # through segment_array: the direction keyword reaches the box
    labels = segment_array(image, SPACING, model, direction=direction)
    assert np.array_equal(labels, whole_inside_box(image, model, decision.box))


def test_widen_box_grows_to_one_patch_and_stays_inside():
    # margin 3 mm at 1 mm: (10, 12) -> (7, 15); a 20 mm minimum grows it to (1, 21)
    assert widen_box([(10, 12)], [100], [1.0], 3.0, [20.0]) == [(1, 21)]
    # at the border the growth goes to the other side
    assert widen_box([(0, 2)], [100], [1.0], 3.0, [20.0]) == [(0, 20)]
    assert widen_box([(95, 100)], [100], [1.0], 0.0, [20.0]) == [(80, 100)]
    # never beyond the image
    assert widen_box([(0, 5)], [8], [1.0], 3.0, [20.0]) == [(0, 8)]


def _geometry_model(patch, spacing, transpose=(0, 1, 2)):
    """What the ROI geometry reads of a model: its patch and spacing (plans order) and axis order."""
    from types import SimpleNamespace
    return SimpleNamespace(config=SimpleNamespace(patch_size=patch, spacing=spacing), transpose_forward=transpose,
                           mind_params=None)


@pytest.mark.parametrize("patch,target,transpose", [((32, 80, 96), (6.0, 3.0, 3.0), (0, 1, 2)),   # weights/
                                                    ((40, 192, 224), (2.5, 0.78, 0.78), (0, 1, 2)),  # the paper's
                                                    ((16, 24, 20), (3.0, 2.0, 2.5), (2, 0, 1))])
def test_no_box_spares_a_tile_where_the_rule_says_so(patch, target, transpose):
    """box_could_spare_tiles against brute force: on fields around two patches wide, every box decide_box
    could give (any localiser box, widened, cranio-caudal axis whole) meets every tile of the whole grid
    wherever the rule says False; and the rule says True on some fields where a box does spare one."""
    from inference.roi import box_could_spare_tiles, patch_extent_mm
    from inference.rules.region import network_region
    from inference.rules.spacing import new_shape_for_spacing
    from inference.rules.tiling import tiles_meeting
    model = _geometry_model(patch, target, transpose)
    rng = np.random.default_rng(1)
    spared_where_allowed = 0
    for _ in range(60):
        spacing = tuple(float(s) for s in rng.uniform(0.6, 1.6, 3) * np.array([target[transpose.index(a)] for a in range(3)]))
        net_patch = [patch[transpose.index(a)] * target[transpose.index(a)] / spacing[a] for a in range(3)]
        shape = tuple(int(n * rng.uniform(1.3, 2.7)) for n in net_patch)       # 1.3 to 2.7 patches
        image = np.ones((1, *shape), np.float32)
        for si, direction in ((0, AXIAL), (1, CORONAL), (2, SAGITTAL_SI_FIRST)):
            network_shape = new_shape_for_spacing([shape[a] for a in transpose], [spacing[a] for a in transpose], target)
            whole = tiles_meeting(network_shape, patch, 0.5)
            fewest = whole
            for _ in range(25):
                core = []
                for n in shape:
                    lo = int(rng.integers(0, n))
                    core.append((lo, int(rng.integers(lo + 1, n + 1))))
                box = widen_box(core, shape, spacing, 20.0, patch_extent_mm(model))
                box[si] = (0, shape[si])
                region = network_region([slice(a, b) for a, b in box], transpose,
                                        [(0, shape[a]) for a in transpose], network_shape)
                fewest = min(fewest, tiles_meeting(network_shape, patch, 0.5, region.network))
            could = box_could_spare_tiles(image, spacing, model, direction)
            if not could:
                assert fewest == whole, (shape, spacing, si)
            spared_where_allowed += could and fewest < whole
    assert spared_where_allowed > 0


def test_localizer_is_not_run_where_no_box_could_spare_a_tile(tmp_path, monkeypatch):
    """A field under two patches wide in-plane: the result is --no-roi's, without running the localiser.
    Zero planes at an end of an in-plane axis (a crop to nonzero could narrow the box) run it again."""
    from inference.roi import box_could_spare_tiles
    model = model_with_localizer(tmp_path)
    shape = (40, 50, 56)                           # 240 x 150 x 168 mm: in-plane under two 96 mm patches
    image = image_with_block((slice(10, 30), slice(20, 30), slice(20, 36)), shape)
    assert not box_could_spare_tiles(image, SPACING, model)
    ran = []
    monkeypatch.setattr("inference.roi.foreground_box", lambda *a: ran.append(1) or ([(10, 30), (20, 30), (20, 36)], 500.0))
    timer = StageTimer()
    labels = segment_array(image, SPACING, model, timer=timer)
    assert not ran and "localize" not in timer.seconds
    assert np.array_equal(labels, segment_array(image, SPACING, without_localizer(model)))
    assert len(np.unique(labels)) > 1
    # the box grid can always spare tiles: the localiser runs there
    segment_array(image, SPACING, model, roi_settings=RoiSettings(grid="box", max_box_fraction=1.0))
    assert ran == [1]
    image[:, :, -3:, :] = 0                        # the crop to nonzero would cut the end of an in-plane axis
    assert box_could_spare_tiles(image, SPACING, model)
    image = image_with_block((slice(5, 15), slice(20, 30), slice(20, 36)), (20, 70, 56))   # y 210 mm: over two patches
    assert box_could_spare_tiles(image, SPACING, model)
    # with array axis 1 cranio-caudal (coronal), that long axis is never narrowed: nothing to spare
    assert not box_could_spare_tiles(image, SPACING, model, CORONAL)


@pytest.mark.parametrize("shape", [(0, 10, 10), (10, 0, 10), (10, 10, 0)])
def test_an_empty_image_is_refused_as_without_a_localiser(tmp_path, shape):
    model = model_with_localizer(tmp_path)
    image = np.zeros((1, *shape), np.float32)
    with pytest.raises(InferenceError, match=r"^image: .*nothing to segment"):
        segment_array(image, SPACING, model)


def test_image_smaller_than_the_patch(tmp_path, monkeypatch):
    """A box (and image) smaller than the model's patch: the box grows to the whole image, the model
    pads as it does for any small image."""
    model = model_with_localizer(tmp_path)
    shape = (6, 12, 12)                                           # 36 mm each way < patch 96 mm
    image = image_with_block((slice(2, 4), slice(4, 8), slice(4, 8)), shape)
    monkeypatch.setattr("inference.roi.foreground_box", lambda *a: ([(2, 4), (4, 8), (4, 8)], 500.0))
    decision = decide_box(image, SPACING, model, RoiSettings(max_box_fraction=1.0))
    assert decision.box == (slice(0, 6), slice(0, 12), slice(0, 12))
    labels = segment_array(image, SPACING, model, roi_settings=RoiSettings(max_box_fraction=1.0))
    assert labels.shape == shape
    assert np.array_equal(labels, segment_array(image, SPACING, without_localizer(model)))


def test_result_equals_no_roi_when_the_box_is_the_whole_image(tmp_path, monkeypatch):
    model = model_with_localizer(tmp_path)
    image = image_with_block(BLOCK)
    monkeypatch.setattr("inference.roi.foreground_box",
                        lambda *a: ([(0, SHAPE[0]), (0, SHAPE[1]), (0, SHAPE[2])], 1000.0))
    settings = RoiSettings(max_box_fraction=1.0)
    decision = decide_box(image, SPACING, model, settings)
    assert decision.box == tuple(slice(0, n) for n in SHAPE)           # the crop/paste path runs
    with_roi = segment_array(image, SPACING, model, roi_settings=settings)
    plain = segment_array(image, SPACING, without_localizer(model))
    assert np.array_equal(with_roi, plain) and len(np.unique(plain)) > 1


def test_transposed_localizer_plans_map_the_box_back(tmp_path):
    """A localiser whose plans transpose the axes still gives the box in the input's axes."""
    def transpose(plans):
        plans["transpose_forward"], plans["transpose_backward"] = [2, 0, 1], [1, 2, 0]
    model = model_with_localizer(tmp_path, loc_plans_edit=transpose)
    block = BLOCK
    decision = decide_box(image_with_block(block), SPACING, model)
    assert decision.box is not None
    for sl, b in zip(decision.box, block):
        assert sl.start <= b.start and sl.stop >= b.stop


@pytest.mark.parametrize("direction,si", [("flip", 0), ("oblique", 0), ("coronal", 1), ("sagittal", 2)])
def test_flipped_and_oblique_geometry_output_grid_is_the_input_grid(tmp_path, direction, si):
    """segment_folder reads the direction from the file: the box keeps the whole extent of the axis
    that is cranio-caudal in that geometry, whichever array axis it is."""
    model = model_with_localizer(tmp_path)
    block = BLOCK
    image = image_with_block(block)[0]
    d = {"flip": (-1, 0, 0, 0, -1, 0, 0, 0, 1), "oblique": oblique_direction(25.0), "coronal": CORONAL,
         "sagittal": SAGITTAL_SI_FIRST}[direction]
    origin = (31.0, -240.5, 77.25)
    write_image(tmp_path / "in" / "case_0000.nii.gz", image, SPACING[::-1], origin, d)
    results = segment_folder(tmp_path / "in", tmp_path / "out", model=model)
    assert results[0].ok, results[0].error
    assert "localize" in results[0].timings
    src = sitk.ReadImage(str(tmp_path / "in" / "case_0000.nii.gz"))
    out = sitk.ReadImage(str(tmp_path / "out" / "case.nii.gz"))
    assert out.GetSize() == src.GetSize()
    assert np.allclose(out.GetSpacing(), src.GetSpacing()) and np.allclose(out.GetOrigin(), src.GetOrigin())
    assert np.allclose(out.GetDirection(), src.GetDirection())
    decision = decide_box(image[None], SPACING, model, direction=d)
    assert decision.box[si] == slice(0, SHAPE[si])
    assert all(decision.box[a] != slice(0, SHAPE[a]) for a in range(3) if a != si)   # the others cropped
    assert np.array_equal(sitk.GetArrayFromImage(out), whole_inside_box(image[None], model, decision.box))


def test_multi_channel_model_and_localizer(tmp_path):
    model = model_with_localizer(tmp_path, channels=2)
    block = BLOCK
    image = image_with_block(block, channels=2)
    decision = decide_box(image, SPACING, model)
    assert decision.reason == "box"
    labels = segment_array(image, SPACING, model)
    assert np.array_equal(labels, whole_inside_box(image, model, decision.box))


def test_mind_model_computes_descriptors_once_over_the_whole_image(tmp_path, monkeypatch):
    """The box does not change the network's input: the descriptors are the whole image's, computed
    once (the localiser reads intensities)."""
    from inference import mind as torch_mind
    from inference.engines.numpy_engine import mind as numpy_mind
    from inference.mind import mind_channel_names, mind_dataset_json_entry

    def as_mind(ds):
        ds["channel_names"] = mind_channel_names()
        ds["mind"] = mind_dataset_json_entry(radius=1, dilation=2, patch="box")
    model = model_with_localizer(tmp_path, channels=12, loc_channels=1, main_dataset_edit=as_mind)
    assert model.mind_params is not None and model.localizer.mind_params is None
    block = BLOCK
    image = image_with_block(block)
    calls = []
    mind = numpy_mind if model.plan.backend == "openvino" else torch_mind   # the OpenVINO path's is numpy
    real = mind.mind_channels

    def counting(img, *a, **k):
        calls.append(tuple(img.shape))
        return real(img, *a, **k)
    monkeypatch.setattr(mind, "mind_channels", counting)
    decision = decide_box(image, SPACING, model)
    assert decision.box is not None and calls == []              # the localiser reads intensities
    labels = segment_array(image, SPACING, model)
    assert calls == [(1, *SHAPE)]                                # once, over the whole image
    assert np.array_equal(labels, whole_inside_box(image, model, decision.box))


def test_cli_no_roi_and_localize_stage(tmp_path):
    from inference.cli import main as cli_main
    model = model_with_localizer(tmp_path)
    # the CLI loads the folder itself: give it a localiser whose real (random) network runs
    image = image_with_block(BLOCK)[0]
    write_image(tmp_path / "in" / "case_0000.nii.gz", image, SPACING[::-1])
    for flag, name in (([], "roi"), (["--no-roi"], "plain"), (["--roi-grid", "box"], "box")):
        rc = cli_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / name), "-m", str(model.model_dir),
                       "--device", "cpu", "--timings", str(tmp_path / f"{name}.json"), *flag])
        assert rc == 0
    roi = json.loads((tmp_path / "roi.json").read_text())["cases"][0]["seconds"]
    plain = json.loads((tmp_path / "plain.json").read_text())["cases"][0]["seconds"]
    assert "localize" in roi and "localize" not in plain


# --- the shipped model and localiser on a sample -----------------------------------------------------

@pytest.mark.skipif(not (REPO / "weights" / "localizer" / "plans.json").is_file(), reason="weights/ not present")
def test_shipped_localizer_keeps_the_organs_at_the_first_and_last_slices():
    """weights/ on the compare case's phantom (benchmarks.studies.compare_nnunet: subject 910000, T1, 72 slices
    of 3.47 mm) at half its in-plane resolution (160x145 at 2.5 mm, for speed). The localiser's widened
    box alone spans slices 7..67; the ROI box spans all 72, and the organs the whole-image run finds on
    the first and the last slice (tube and kidney ends) are found there with ROI too, on the same voxels
    inside the box. A box that cut those slices would leave them empty."""
    from phantoms import generate_case
    from inference.roi import foreground_box, patch_extent_mm
    img, _ = generate_case(910000, "t1", spacing=(2.5, 2.5, 3.47), size=(160, 145, 72), direction="axial")
    image = sitk.GetArrayFromImage(img).astype(np.float32)[None]
    spacing, direction = img.GetSpacing()[::-1], img.GetDirection()
    model = load_model(REPO / "weights", precision="fp32")         # the figures below were measured in fp32
    shape = image.shape[1:]
    found, _ = foreground_box(image, spacing, model.localizer)
    widened = widen_box(found, shape, spacing, 20.0, patch_extent_mm(model))
    assert widened[0][0] > 0 and widened[0][1] < shape[0]         # the localiser alone would cut both ends
    settings = RoiSettings(max_box_fraction=1.0)                    # the ROI path, whatever the fraction
    decision = decide_box(image, spacing, model, settings, direction=direction)
    assert decision.box == (slice(0, shape[0]), *(slice(a, b) for a, b in widened[1:]))
    assert decision.box[1] != slice(0, shape[1]) and decision.box[2] != slice(0, shape[2])
    roi = segment_array(image, spacing, model, direction=direction, roi_settings=settings)
    whole = segment_array(image, spacing, without_localizer(model))
    assert np.array_equal(roi[decision.box], whole[decision.box])
    for z in (0, shape[0] - 1):
        organs = set(np.unique(whole[z])) - {0}
        assert organs                                             # the end slices do hold organs
        assert set(np.unique(roi[z])) - {0} == organs


# --- one normalised crop for the localiser and the model (numpy engine) ----------------------------

def test_localizer_and_model_share_one_normalised_crop(tmp_path, monkeypatch):
    """Both models z-score the same image the same way: the numpy engine crops and normalises it once
    per case (the memo segment_array makes), and each model's input equals its unshared preprocessing."""
    from inference.engines.numpy_engine import preprocess as numpy_pre
    model = model_with_localizer(tmp_path, backend="torch")   # the numpy stage needs only the folder
    image, spacing = body_image((30, 160, 160), (slice(10, 20), slice(70, 90), slice(60, 80))), (5.0, 2.0, 2.0)
    made = []
    real = numpy_pre.normalised_crop
    monkeypatch.setattr(numpy_pre, "normalised_crop", lambda *a: made.append(a[2]) or real(*a))
    shared: dict = {}
    ours = [numpy_pre.preprocess(image, spacing, m, "image", shared) for m in (model.localizer, model)]
    assert len(made) == 1 and len(shared) == 1
    for prep, m in zip(ours, (model.localizer, model)):
        alone = numpy_pre.preprocess(image, spacing, m, "image")
        assert np.array_equal(prep.data, alone.data) and prep.bbox == alone.bbox
        assert (prep.shape_before_cropping, prep.shape_after_cropping, prep.spacing) == \
            (alone.shape_before_cropping, alone.shape_after_cropping, alone.spacing)
    assert not np.shares_memory(ours[0].data, image)          # the caller's array is never changed


def test_sharing_key_follows_the_effective_normalisation():
    from types import SimpleNamespace

    from inference.engines.numpy_engine.preprocess import sharing_key
    from inference.rules.preprocessing import ChannelNormalization as Step
    model = SimpleNamespace(transpose_forward=(0, 1, 2), mind_params=None)
    z = [Step("ZScoreNormalization", {"mean": 1.0}, False)]
    ct = {"mean": 1.0, "std": 2.0, "percentile_00_5": -5.0, "percentile_99_5": 9.0}
    assert sharing_key(model, z) == sharing_key(model, [Step("ZScoreNormalization", {"mean": 7.0}, False)])
    assert sharing_key(model, z) != sharing_key(model, [Step("ZScoreNormalization", {"mean": 1.0}, True)])
    assert sharing_key(model, [Step("CTNormalization", ct, False)]) != \
        sharing_key(model, [Step("CTNormalization", {**ct, "std": 3.0}, False)])
    assert sharing_key(model, z) != sharing_key(SimpleNamespace(transpose_forward=(2, 0, 1), mind_params=None), z)
