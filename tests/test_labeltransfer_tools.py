"""The label-transfer pipeline tools: descriptors, pseudolabel, filter, propagate, assemble."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from _labeltransfer_volumes import ORGANS as ORGANS_XYZ
from _labeltransfer_volumes import dice, make_subject, rotation

from flare.labels import ORGANS, dataset_json_labels
from labeltransfer import assemble as asm
from labeltransfer import descriptors, filter_labels, propagate, pseudolabel
from labeltransfer.__main__ import main as cli
from labeltransfer.io import CaseError, list_image_cases
from inference.mind import descriptor_channels_from_dataset_json, mind_ssc

SMALL = {"size": (24, 20, 12), "spacing": (4.0, 4.0, 6.0)}


def _csv_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write(img: sitk.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def _raw_dataset(root: Path, n: int = 2, modality: str = "CT") -> Path:
    ds = root / "Dataset001_Toy"
    for i in range(n):
        img, lab = make_subject(modality, seed=i, **SMALL)
        _write(img, ds / "imagesTr" / f"case{i}_0000.nii.gz")
        _write(lab, ds / "labelsTr" / f"case{i}.nii.gz")
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": dataset_json_labels(),
                                                 "numTraining": n, "file_ending": ".nii.gz"}))
    return ds


# --- descriptors ------------------------------------------------------------------------------------

def test_descriptors_dataset(tmp_path):
    src = _raw_dataset(tmp_path / "raw")
    dst = tmp_path / "raw" / "Dataset002_ToyMIND"
    assert cli(["descriptors", str(src), str(dst), "--slab", "5"]) == 0
    meta = json.loads((dst / "dataset.json").read_text())
    params = descriptor_channels_from_dataset_json(meta)
    assert params == {"radius": 1, "dilation": 2, "patch": "box", "sigma": 0.8}
    assert meta["mind_source_channel"] == "CT" and meta["numTraining"] == 2
    assert meta["labels"] == dataset_json_labels()
    cases = list_image_cases(dst / "imagesTr")
    assert list(cases) == ["case0", "case1"] and all(len(f) == 12 for f in cases.values())
    img = sitk.ReadImage(str(src / "imagesTr" / "case1_0000.nii.gz"), sitk.sitkFloat32)
    want = mind_ssc(torch.from_numpy(sitk.GetArrayFromImage(img)), **params).numpy()
    for k in (0, 7, 11):
        got = sitk.ReadImage(str(cases["case1"][k]))
        assert got.GetSpacing() == img.GetSpacing() and got.GetOrigin() == img.GetOrigin()
        np.testing.assert_allclose(sitk.GetArrayFromImage(got), want[k], atol=1e-6)
    lab = dst / "labelsTr" / "case0.nii.gz"
    assert lab.is_symlink() and lab.resolve() == (src / "labelsTr" / "case0.nii.gz").resolve()
    # resumable: everything is skipped on a rerun
    summary = descriptors.convert_dataset(src, dst, params, log=lambda *_: None)
    assert summary.skipped == ["case0", "case1"] and not summary.done
    # a MIND dataset is not converted again
    with pytest.raises(ValueError, match="already declares MIND"):
        descriptors.convert_dataset(dst, tmp_path / "x", params)


def test_descriptors_bad_case_does_not_stop_others(tmp_path):
    src = tmp_path / "imgs"
    img, _ = make_subject("T1", **SMALL)
    _write(img, src / "good_0000.nii.gz")
    (src / "broken_0000.nii.gz").write_bytes(b"not a nifti")
    _write(img, src / "twochan_0000.nii.gz")
    _write(img, src / "twochan_0001.nii.gz")
    s = descriptors.convert_images_folder(src, tmp_path / "out", {"radius": 1, "dilation": 1, "patch": "box",
                                                                  "sigma": 0.8}, log=lambda *_: None)
    assert s.done == ["good"]
    assert "broken_0000.nii.gz: cannot read image" in s.failed["broken"]
    assert "2 channels" in s.failed["twochan"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"good_{k:04d}.nii.gz" for k in range(12)]


# --- pseudolabel ------------------------------------------------------------------------------------

def test_shard_round_robin_and_validation():
    cases = [f"c{i:02d}" for i in range(10)][::-1]
    parts = [pseudolabel.shard(cases, i, 3) for i in range(3)]
    assert parts[0] == ["c00", "c03", "c06", "c09"] and parts[2] == ["c02", "c05", "c08"]
    assert sorted(c for p in parts for c in p) == sorted(cases)
    with pytest.raises(ValueError, match=r"--part must be in \[0, 2\]"):
        pseudolabel.shard(cases, 3, 3)
    with pytest.raises(ValueError, match="--parts must be >= 1"):
        pseudolabel.shard(cases, 0, 0)
    # a resubmitted --array=5,9 has SLURM_ARRAY_TASK_MIN=5 and must still run shard 5, not shard 0
    assert pseudolabel.part_from_environment({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "5"}) == 5
    assert pseudolabel.part_from_environment({"JOB_COMPLETION_INDEX": "2"}) == 2
    assert pseudolabel.part_from_environment({}) is None


class FakePredictor:
    """Stands in for inference.api.segment_folder: writes a label per case it is given, records calls."""

    def __init__(self, fail=(), silent=(), explode_on=None):
        self.calls: list[list[str]] = []
        self.fail, self.silent, self.explode_on = set(fail), set(silent), explode_on

    def __call__(self, input_dir, output_dir, *, model, cases, on_result, tta=False, step_size=0.5):
        self.calls.append([c.case_id for c in cases])
        for c in cases:
            if c.case_id == self.explode_on:
                raise RuntimeError("CUDA out of memory")
            if c.case_id in self.fail:
                on_result(SimpleNamespace(case=c.case_id, ok=False, error=f"{c.case_id}: corrupt header"))
                continue
            if c.case_id not in self.silent:
                img = sitk.ReadImage(str(c.channel_files[0]))
                sitk.WriteImage(sitk.Cast(img > 100, sitk.sitkUInt8), str(Path(output_dir) / f"{c.case_id}.nii.gz"))
            on_result(SimpleNamespace(case=c.case_id, ok=True, error=None))


# a loaded model as far as pseudolabel looks at it
FAKE_MODEL = SimpleNamespace(num_input_files=1, file_ending=".nii.gz")


def _image_folder(path: Path, n: int) -> Path:
    img, _ = make_subject("T1", size=(8, 8, 4), spacing=(4.0, 4.0, 6.0))
    for i in range(n):
        _write(img, path / f"img{i:02d}_0000.nii.gz")
    return path


def test_pseudolabel_shards_resume_and_failures(tmp_path):
    inp = _image_folder(tmp_path / "in", 7)
    out = tmp_path / "out"
    model = tmp_path / "model"
    fake = FakePredictor(fail={"img03"}, silent={"img05"})
    quiet = {"log": lambda *_: None, "segment_folder": fake, "model": FAKE_MODEL}
    r0 = pseudolabel.pseudolabel(inp, out, model, part=0, parts=2, **quiet)
    assert r0.cases == ["img00", "img02", "img04", "img06"]
    assert fake.calls == [["img00", "img02", "img04", "img06"]]  # one call per shard
    assert r0.done == r0.cases and not r0.failed
    r1 = pseudolabel.pseudolabel(inp, out, model, part=1, parts=2, **quiet)
    assert r1.done == ["img01"]
    assert r1.failed == {"img03": "img03: corrupt header",
                         "img05": "the predictor reported success but wrote no img05.nii.gz"}
    assert sorted(p.name for p in out.iterdir()) == [f"img{i:02d}.nii.gz" for i in (0, 1, 2, 4, 6)]
    # resume: only the failed cases are attempted again
    fake.calls.clear()
    fake.fail, fake.silent = set(), set()
    r1b = pseudolabel.pseudolabel(inp, out, model, part=1, parts=2, **quiet)
    assert fake.calls == [["img03", "img05"]] and r1b.skipped == ["img01"] and r1b.done == ["img03", "img05"]
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporary file left


def test_pseudolabel_loop_exception_fails_only_the_cases_left(tmp_path):
    inp = _image_folder(tmp_path / "in", 4)
    fake = FakePredictor(explode_on="img02")
    r = pseudolabel.pseudolabel(inp, tmp_path / "out", tmp_path / "model", model=FAKE_MODEL,
                                segment_folder=fake, log=lambda *_: None)
    # worded without Python's type name (no "RuntimeError:"), naming the case
    assert r.failed == {c: f"{inp / c}: could not be processed: CUDA out of memory" for c in ("img02", "img03")}
    assert r.done == ["img00", "img01"]


def test_pseudolabel_with_the_project_predictor(tmp_path):
    """Real predictor on a tiny random-weights model, two shards: every case is written once, on its
    input's grid, with the labels nnU-Net's own nnUNetPredictor gives for the same model folder (>= 99 %
    of voxels: the two differ only in float rounding, as in test_inference_equivalence)."""
    from testsupport.nnunet_reference import geometry, run_nnunet

    from testsupport.model_folder import write_preset
    model = write_preset(tmp_path / "model", "tiny")
    inp = tmp_path / "in"
    for i in range(3):
        img, _ = make_subject("T1", seed=i, size=(20, 18, 10), spacing=(3.0, 3.0, 4.0))
        _write(img, inp / f"c{i}_0000.nii.gz")
    out = tmp_path / "out"
    for part in (0, 1):
        assert cli(["pseudolabel", str(inp), str(out), "--model", str(model), "--part", str(part), "--parts", "2",
                    "--device", "cpu", "-q"]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"c{i}.nii.gz" for i in range(3)]
    for i in (0, 1):                                            # one case of each shard
        want_file = run_nnunet(model, [inp / f"c{i}_0000.nii.gz"], tmp_path / "nnunet")
        got, want = sitk.ReadImage(str(out / f"c{i}.nii.gz")), sitk.ReadImage(str(want_file))
        assert geometry(got) == geometry(want) and got.GetSize() == (20, 18, 10)
        got_a, want_a = sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(want)
        assert len(np.unique(want_a)) >= 2                      # a non-trivial prediction to compare
        assert np.mean(got_a == want_a) >= 0.99
    rep = json.loads((out / "pseudolabel_part1of2.json").read_text())
    assert rep["done"] == ["c1"] and rep["failed"] == {}


def test_pseudolabel_cli_dry_run_and_missing_model(tmp_path, capsys, monkeypatch):
    inp = _image_folder(tmp_path / "in", 5)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert cli(["pseudolabel", str(inp), str(tmp_path / "out"), "--model", "m", "--parts", "2", "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == ["img01", "img03"]
    with pytest.raises(CaseError, match="model folder not found"):
        pseudolabel.pseudolabel(inp, tmp_path / "out", tmp_path / "nope")
    capsys.readouterr()
    assert cli(["pseudolabel", str(inp), str(tmp_path / "out"), "--model", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"pseudolabel: error: {tmp_path / 'nope'}: model folder not found\n"


# --- filter -----------------------------------------------------------------------------------------

def _label(values_counts: dict[int, int], spacing=(2.0, 2.0, 2.5)) -> sitk.Image:
    arr = np.zeros(2000, np.uint8)
    i = 0
    for v, c in values_counts.items():
        arr[i:i + c] = v
        i += c
    img = sitk.GetImageFromArray(arr.reshape(10, 10, 20))
    img.SetSpacing(spacing)
    return img


def test_filter_keeps_complete_cases_with_report(tmp_path):
    full = {o.label: 10 * o.label for o in ORGANS}
    labels = tmp_path / "labels"
    _write(_label(full), labels / "full.nii.gz")
    _write(_label({k: v for k, v in full.items() if k != 9}), labels / "nogb.nii.gz")
    _write(_label({**full, 1: 300}), labels / "bigliver.nii.gz")
    _write(_label({**full, 14: 5}), labels / "badvalue.nii.gz")
    (labels / "corrupt.nii.gz").write_bytes(b"xx")
    (tmp_path / "bounds.json").write_text(json.dumps({"liver": [0.05, 2.0], "RK": [None, 10]}))
    rc = cli(["filter", str(labels), "-o", str(tmp_path / "rep"), "--bounds", str(tmp_path / "bounds.json")])
    assert rc == 1  # one unreadable file
    assert (tmp_path / "rep" / "keep.txt").read_text() == "full\n"
    rows = {r["case"]: r for r in _csv_rows(tmp_path / "rep" / "filter.csv")}
    assert set(rows) == {"full", "nogb", "bigliver", "badvalue"}
    assert rows["full"]["keep"] == "1" and rows["full"]["reason"] == ""
    # 10 voxels of 2 x 2 x 2.5 mm = 0.1 mL; RK (label 2): 20 voxels = 0.2 mL
    assert rows["full"]["Liver_ml"] == "0.100" and rows["full"]["RK_ml"] == "0.200"
    assert rows["nogb"]["reason"] == "missing Gallbladder"
    assert rows["bigliver"]["reason"] == "Liver 3.0 mL outside [0.05, 2]"
    assert rows["badvalue"]["reason"] == "values outside 0..13: [14]"
    md = (tmp_path / "rep" / "filter.md").read_text()
    assert "Kept **1** of 4 readable cases; 1 unreadable." in md
    assert "| gallbladder | 2/4 |" in md and "corrupt.nii.gz: cannot read image" in md


def test_filter_require_subset_and_min_voxels():
    lab = _label({1: 50, 2: 3})
    r = filter_labels.assess(lab, "c", required=[1, 2], min_voxels=5)
    assert not r.keep and r.reason == "missing RK"
    assert filter_labels.assess(lab, "c", required=[1, 2], min_voxels=3).keep
    with pytest.raises(ValueError, match="unknown organ 'kidney'"):
        filter_labels.organ_from_key("kidney")


# --- propagate --------------------------------------------------------------------------------------

MOTION = rotation(2, -2, 4)
SHIFT = (3.0, -2.0, 2.5)


def _two_sequences():
    t1, l1 = make_subject("T1", size=(48, 40, 24), spacing=(2.0, 2.0, 3.0), seed=1)
    t2, l2 = make_subject("T2", size=(40, 36, 20), spacing=(2.4, 2.2, 3.5), motion=MOTION, shift_mm=SHIFT, seed=2)
    return t1, l1, t2, l2


def test_propagate_affine_recovers_motion():
    t1, l1, t2, l2 = _two_sequences()
    truth = sitk.GetArrayFromImage(l2)
    true_t = sitk.AffineTransform(3)
    true_t.SetMatrix(MOTION.ravel().tolist())
    true_t.SetTranslation(SHIFT)
    # best achievable: the true motion, limited only by nearest-neighbour resampling between grids
    oracle = dice(sitk.GetArrayFromImage(propagate.resample_label(l1, t2, true_t)), truth)
    plain, info0 = propagate.propagate_label(l1, t1, t2, "none")
    affine, info = propagate.propagate_label(l1, t1, t2, "affine")
    d_plain = dice(sitk.GetArrayFromImage(plain), truth)
    d_affine = dice(sitk.GetArrayFromImage(affine), truth)
    print(f"synthetic propagation Dice: plain {d_plain:.3f}, affine {d_affine:.3f}, true motion {oracle:.3f}")
    assert info0.transform == "none" and info.transform == "affine" and not info.fallback
    assert d_affine >= oracle - 0.02
    assert d_plain < oracle - 0.1
    assert info.metric_final < info.metric_identity
    assert affine.GetSize() == t2.GetSize() and affine.GetSpacing() == t2.GetSpacing()
    assert affine.GetPixelID() == l1.GetPixelID()
    # reproducible: one thread and a fixed seed give identical transforms
    ta, _ = propagate.register(t2, t1, "affine", threads=1)
    tb, _ = propagate.register(t2, t1, "affine", threads=1)
    assert ta.GetParameters() == tb.GetParameters()
    # at the organ centres (points of the target image), the estimate is within 1 mm of the true motion
    t, _ = propagate.register(t2, t1, "affine")
    for _, centre, _ in ORGANS_XYZ:
        p = MOTION.T @ (np.asarray(centre, float) - SHIFT)
        assert np.linalg.norm(np.subtract(t.TransformPoint(p), true_t.TransformPoint(p))) < 1.0


def test_propagate_guard_and_geometry_errors():
    t1, l1, t2, _ = _two_sequences()
    out, info = propagate.propagate_label(l1, t1, t2, "rigid", max_shift_mm=0.5)
    assert info.transform == "none" and "moved a corner" in info.fallback
    plain = propagate.resample_label(l1, t2)
    assert np.array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(plain))
    with pytest.raises(CaseError, match="geometry"):
        propagate.propagate_label(l1, t2, t1, "none")
    with pytest.raises(ValueError, match="transform must be"):
        propagate.register(t1, t2, "bspline")


def test_propagate_cli_subject_pattern(tmp_path):
    t1, l1, t2, l2 = _two_sequences()
    images, labels = tmp_path / "images", tmp_path / "labels"
    _write(t1, images / "subj1_T1_0000.nii.gz")
    _write(t2, images / "subj1_T2_0000.nii.gz")
    _write(t2, images / "subj2_T2_0000.nii.gz")       # no T1 image: left out with a note
    _write(t1, images / "other_0000.nii.gz")           # does not match the pattern
    _write(l1, labels / "subj1_T1.nii.gz")
    jobs, notes = propagate.build_jobs(images, labels, r"(?P<subject>subj\d+)_(?P<sequence>T\d)", "T1",
                                       tmp_path / "out")
    assert [(j.label.name, j.target_image.name, j.output.name) for j in jobs] == [
        ("subj1_T1.nii.gz", "subj1_T2_0000.nii.gz", "subj1_T2.nii.gz")]
    assert notes == ["other: does not match --pattern, left out", "subject subj2: no T1 image"]
    args = ["propagate", "--images", str(images), "--labels", str(labels), "--pattern",
            r"(?P<subject>subj\d+)_(?P<sequence>T\d)", "--source-sequence", "T1", "-o", str(tmp_path / "out")]
    assert cli(args) == 0
    out = sitk.ReadImage(str(tmp_path / "out" / "subj1_T2.nii.gz"))
    assert dice(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(l2)) > 0.85
    rep = _csv_rows(tmp_path / "out" / "propagate_report.csv")
    assert rep[0]["transform"] == "affine" and rep[0]["error"] == ""
    assert cli(args) == 0  # resumable: output exists, skipped
    rep = _csv_rows(tmp_path / "out" / "propagate_report.csv")
    assert rep[0]["transform"] == "skipped (output exists)"


def test_propagate_manifest_bad_row_goes_on(tmp_path):
    t1, l1, t2, _ = _two_sequences()
    _write(t1, tmp_path / "t1.nii.gz")
    _write(t2, tmp_path / "t2.nii.gz")
    _write(l1, tmp_path / "l1.nii.gz")
    (tmp_path / "m.csv").write_text("label,source_image,target_image,output\n"
                                    "missing.nii.gz,t1.nii.gz,t2.nii.gz,o1.nii.gz\n"
                                    "l1.nii.gz,t1.nii.gz,t2.nii.gz,o2.nii.gz\n")
    rc = cli(["propagate", "--manifest", str(tmp_path / "m.csv"), "--transform", "none"])
    assert rc == 1
    assert not (tmp_path / "o1.nii.gz").exists() and (tmp_path / "o2.nii.gz").exists()
    rep = _csv_rows(tmp_path / "propagate_report.csv")
    assert "missing.nii.gz: file not found" in rep[0]["error"] and rep[1]["transform"] == "none"


# --- assemble ---------------------------------------------------------------------------------------

def test_assemble_mri_plus_ct(tmp_path):
    mri_img, mri_lab = tmp_path / "mri_img", tmp_path / "mri_lab"
    for i in range(3):
        img, lab = make_subject("T1", seed=i, **SMALL)
        _write(img, mri_img / f"amos_{i:04d}_0000.nii.gz")
        _write(lab, mri_lab / f"amos_{i:04d}.nii.gz")
    # amos_0002's label has another grid: left out
    _, other = make_subject("T1", size=(20, 20, 12), spacing=(4.0, 4.0, 6.0))
    _write(other, mri_lab / "amos_0002.nii.gz")
    keep = tmp_path / "keep.txt"
    keep.write_text("amos_0000\namos_0002\namos_0009\n")
    ct = _raw_dataset(tmp_path / "ct", n=2)
    out = tmp_path / "raw" / "Dataset503_FLAREMRICT"
    rc = cli(["assemble", str(out), "--source", f"images={mri_img},labels={mri_lab},keep={keep},name=mri",
              "--source", f"images={ct / 'imagesTr'},labels={ct / 'labelsTr'},prefix=ct_,name=ct"])
    assert rc == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta == {"channel_names": {"0": "zscore"}, "labels": dataset_json_labels(), "numTraining": 3,
                    "file_ending": ".nii.gz", "sources": {"mri": 1, "ct": 2}}
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "amos_0000_0000.nii.gz", "ct_case0_0000.nii.gz", "ct_case1_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [
        "amos_0000.nii.gz", "ct_case0.nii.gz", "ct_case1.nii.gz"]
    assert (out / "labelsTr" / "ct_case1.nii.gz").resolve() == (ct / "labelsTr" / "case1.nii.gz").resolve()
    # rerun without the CT source: its cases are removed, counts follow
    counts, left_out = asm.assemble(out, [asm.Source(mri_img, mri_lab, keep, name="mri")], link="copy",
                                    log=lambda *_: None)
    assert counts == {"mri": 1} and sorted(p.name for p in (out / "imagesTr").iterdir()) == ["amos_0000_0000.nii.gz"]
    assert not (out / "imagesTr" / "amos_0000_0000.nii.gz").is_symlink()
    assert "geometry differs" in left_out["amos_0002"] and "no image" in left_out["amos_0009"]


def test_assemble_errors(tmp_path):
    ds = _raw_dataset(tmp_path / "a", n=1)
    src = asm.Source(ds / "imagesTr", ds / "labelsTr", name="a")
    with pytest.raises(ValueError, match="Dataset503_FLAREMRICT"):
        asm.assemble(tmp_path / "bad_name", [src])
    with pytest.raises(ValueError, match="comes from two sources"):
        asm.assemble(tmp_path / "Dataset001_X", [src, asm.Source(ds / "imagesTr", ds / "labelsTr", name="b")])
    with pytest.raises(ValueError, match="images= and labels= are required"):
        asm.Source.parse("images=/x")
    # a label with values outside 0..13 is left out
    lab = sitk.ReadImage(str(ds / "labelsTr" / "case0.nii.gz"))
    sitk.WriteImage(lab * 0 + 20, str(ds / "labelsTr" / "case0.nii.gz"))
    with pytest.raises(ValueError, match="no usable case"):
        asm.assemble(tmp_path / "Dataset002_Y", [src], log=lambda *_: None)


def test_cli_help_lists_tools(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for tool in ("descriptors", "pseudolabel", "filter", "propagate", "assemble"):
        assert tool in out
