"""benchmarks.studies.path_agreement: its Dice arithmetic on hand-made label maps, and one real run (a held-out
phantom, a tiny random-weight model with OpenVINO IR) whose report is recomputed from the files it
predicted."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.common import dice_from_counts, machine_slug
from benchmarks.studies import path_agreement as pa
from evaluation.folder import score_case
from evaluation.masks import read_label_map
from inference.engines.choice import openvino_installed


def test_dice_of_identical_maps_is_one_and_absent_labels_agree():
    a = np.random.default_rng(0).integers(0, 4, size=(5, 6, 7)).astype(np.uint8)
    overlaps = pa.label_overlaps(a, a.copy(), [1, 2, 3, 9])
    assert all(dice_from_counts(*overlaps[label]) == 1.0 for label in (1, 2, 3))
    assert overlaps[9] == (0, 0) and dice_from_counts(0, 0) == 1.0   # in neither map: the paths agree


def test_dice_exact_values_min_and_pooled():
    a = np.array([1, 1, 2, 0, 0, 0], dtype=np.uint8)
    b = np.array([1, 2, 2, 0, 0, 3], dtype=np.uint8)
    ov = pa.label_overlaps(a, b, [1, 2, 3])
    assert ov == {1: (1, 3), 2: (1, 3), 3: (0, 1)}
    assert dice_from_counts(*ov[1]) == pytest.approx(2 / 3) and dice_from_counts(*ov[3]) == 0.0
    same = pa.label_overlaps(a, a, [1, 2, 3])   # second case: identical
    table = pa.agreement_table({"x": ov, "y": same}, [1, 2, 3])
    assert set(table["labels"]) == {1, 2, 3}
    assert table["labels"][1] == {"min": pytest.approx(2 / 3), "min_case": "x", "pooled": pytest.approx(2 * 3 / 7)}
    assert table["labels"][3]["min"] == 0.0 and table["labels"][3]["pooled"] == 0.0   # (0 + 0) / (1 + 0)
    assert table["summary"]["min"]["lowest_label"] == 3
    assert table["summary"]["pooled"]["mean"] == pytest.approx(np.mean([6 / 7, 4 / 5, 0.0]))   # label 2: 2(1 + 1) / (3 + 2)
    assert table["summary"]["meets_targets"] == {"min": False, "pooled": False}
    with pytest.raises(ValueError, match="shape"):
        pa.label_overlaps(a, b[:5], [1])


@pytest.mark.skipif(not openvino_installed(), reason="openvino not installed")
def test_a_run_reports_what_its_predictions_say(tmp_path):
    from inference.weights import import_model
    from testsupport.model_folder import write_preset
    # A coarse target spacing keeps the whole-image network run to a few tiles.
    source = write_preset(tmp_path / "source", "tiny", spacing=(8.0, 6.0, 6.0))
    model = import_model(source, tmp_path / "model", ir=True)
    out, work = tmp_path / "out", tmp_path / "work"
    assert pa.main(["-m", str(model), "-o", str(out), "--cases", "1", "--work", str(work), "-q",
                    "--device", "cpu"]) == 0
    report = json.loads((out / "path_agreement.json").read_text())
    markdown = (out / "path_agreement.md").read_text()
    assert report["metadata"]["command"].startswith("python -m benchmarks.studies.path_agreement -m ")
    assert report["metadata"]["machine"]["slug"] == machine_slug()
    case = "heldout_900000_t1"
    assert report["cases"] == [case] and (work / "labelsTs" / f"{case}.nii.gz").is_file()
    from inference.engines.choice import cpu_has_native_bf16
    # the default is --precision auto: bf16 on a CPU with native bf16, fp32 elsewhere (inference.engines.choice)
    assert report["paths"]["default"]["plan"].startswith(f"openvino {'bf16' if cpu_has_native_bf16() else 'fp32'}")
    assert report["paths"]["reference"]["plan"] == "torch fp32, batch 1"
    # every label in the table, each Dice recomputed from the two predicted files
    a = read_label_map(work / "pred" / "default" / f"{case}.nii.gz").array
    b = read_label_map(work / "pred" / "reference" / f"{case}.nii.gz").array
    table = report["agreement"]["default"]["labels"]
    assert sorted(int(k) for k in table) == list(range(1, 14))
    for label in range(1, 14):
        ga, gb = a == label, b == label
        sizes = int(ga.sum() + gb.sum())
        expected = 1.0 if sizes == 0 else 2 * int((ga & gb).sum()) / sizes
        assert table[str(label)]["min"] == pytest.approx(expected)
        assert table[str(label)]["pooled"] == pytest.approx(expected)   # one case: pooled = that case
        assert f"| {label} {report['label_names'][str(label)]} |" in markdown
    assert report["agreement"]["default"]["voxels_differing"][case] == int(np.count_nonzero(a != b))
    # DSC against the truth, as evaluation scores it, and the difference in points
    truth = work / "labelsTs" / f"{case}.nii.gz"
    for key in ("default", "reference"):
        row = score_case(work / "pred" / key / f"{case}.nii.gz", truth)
        expected = np.nanmean([v for k, v in row.items() if k.endswith("_DSC")])
        assert report["truth_mean_dsc_percent"][key] == pytest.approx(100 * expected)
    assert report["truth_difference_points"]["default"] == pytest.approx(
        report["truth_mean_dsc_percent"]["default"] - report["truth_mean_dsc_percent"]["reference"])
    # on a CPU with native bf16 the default is bf16, and its float32 twin is the third path; elsewhere
    # the default is float32 already and the note says bf16 cannot be measured
    assert ("fp32" in report["paths"]) == cpu_has_native_bf16() and "bf16" not in report["paths"]
    if cpu_has_native_bf16():
        assert report["paths"]["fp32"]["plan"].startswith("openvino fp32")
    if not cpu_has_native_bf16():
        assert "bf16: not measurable on this CPU (no native bf16: flags" in markdown


def test_bad_setup_exits_2(tmp_path, capsys):
    assert pa.main(["-m", str(tmp_path / "missing"), "-o", str(tmp_path)]) == 2
    assert "model folder not found" in capsys.readouterr().err
    assert pa.main(["--cases", "0", "-o", str(tmp_path)]) == 2
