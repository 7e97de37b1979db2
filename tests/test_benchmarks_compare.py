"""benchmarks.studies.compare_nnunet helpers: the nnU-Net-default view of a model, the interleaved
schedule, medians over rounds and the report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.studies.compare_nnunet import (
    NNUNET,
    OURS,
    OURS_DEFAULT,
    OURS_TORCH,
    TO_FILE,
    RunStats,
    first_tile_s,
    ours_command,
    report,
    schedule,
    startup_s,
    summarise,
)
from benchmarks.flare.nnunet_runner import model_folds, nnunet_command, with_default_resampling
from testsupport.model_folder import write_preset


def test_default_resampling_view_shares_weights(tmp_path):
    m = write_preset(tmp_path / "m", "tiny", resampling="torch", folds=(0, 1))
    v = with_default_resampling(m, tmp_path / "v")
    cfg = json.loads((v / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert cfg["resampling_fn_probabilities"] == "resample_data_or_seg_to_shape"
    assert cfg["architecture"] == json.loads((m / "plans.json").read_text())["configurations"]["3d_fullres"]["architecture"]
    assert (v / "fold_0").is_symlink() and (v / "fold_0").resolve() == (m / "fold_0").resolve()
    assert model_folds(v) == ["0", "1"]
    with pytest.raises(FileNotFoundError, match="no fold_"):
        model_folds(tmp_path)


def test_nnunet_command_tta_switch(tmp_path):
    on = nnunet_command(tmp_path / "i", tmp_path / "o", tmp_path / "m", ["all"], tta=True)
    off = nnunet_command(tmp_path / "i", tmp_path / "o", tmp_path / "m", ["all"], tta=False)
    assert "--disable_tta" not in on and off[-1] == "--disable_tta"
    assert on[on.index("-f") + 1] == "all" and on[on.index("-device") + 1] == "cpu"


def test_report_checks_targets():
    ours = RunStats(OURS, ["x"], 0, 9.5, 9.0, 1500.0, "l",
                    {"startup": {"imports": 1.5, "model_load": 0.3},
                     "seconds": {"read": 0.2, "preprocess": 0.3, "network": 7.0, "export": 0.6, "write": 0.2}})
    nn = RunStats("nnU-Net", ["y"], 0, 31.0, 30.0, 4000.0, "l")
    text = report([ours, nn], {"nnU-Net": {1: 0.5, 2: None}}, {0: "background", 1: "liver", 2: "spleen"},
                  "CPU: test", "tiny", 2, "1.0 / 2.0")
    assert "| ours / nnU-Net time (no TTA) | 0.30 | <= 0.33 | yes |" in text
    assert "| start-up: imports + model load (s) | 1.80 | <= 3.0 | yes |" in text
    assert "| read + preprocess + export + write (s) | 1.30 | <= 1.5 | yes |" in text
    assert "| 1 liver | - | 0.5000 |" in text and "| 2 spleen | - | - |" in text
    assert "Load average (1 min) before/after: 1.0 / 2.0" in text


def test_report_shows_dice_against_truth_per_run():
    ours = RunStats(OURS, ["x"], 0, 5.0, 4.8, 1200.0, "l")
    nn = RunStats("nnU-Net", ["y"], 1, 6.0, None, 900.0, "l")
    text = report([ours, nn], {}, {0: "background", 1: "liver"}, "CPU: test", "m", 2,
                  truth_dice={OURS: 0.87814})
    assert "| ours, whole image | 1 | 4.80 | 5.00 | 1,200 | 0 | 0.8781 |" in text
    assert "| nnU-Net | 1 | - | 6.00 | 900 | 1 | - |" in text          # no output: no Dice


def test_phantom_case_has_the_case_grid_and_its_truth(tmp_path, monkeypatch):
    """The compared case is a T1 phantom on the benchmark's grid with its true labels beside it; an
    existing pair is kept (the generator is deterministic, and nnU-Net reruns reuse the inputs)."""
    import SimpleITK as sitk
    from benchmarks.studies import compare_nnunet as cmp
    monkeypatch.setattr(cmp, "CASE_SIZE", (64, 58, 16))              # small, same spacing
    cmp.write_phantom_case(tmp_path / "in", tmp_path / "truth")
    img = sitk.ReadImage(str(tmp_path / "in" / f"{cmp.CASE}_0000.nii.gz"))
    lab = sitk.ReadImage(str(tmp_path / "truth" / f"{cmp.CASE}.nii.gz"))
    assert img.GetSize() == lab.GetSize() == (64, 58, 16)
    assert np.allclose(img.GetSpacing(), cmp.CASE_SPACING) and np.allclose(lab.GetOrigin(), img.GetOrigin())
    assert set(np.unique(sitk.GetArrayFromImage(lab))) >= {0, 1}      # background and at least the liver
    assert not list((tmp_path / "in").glob(".*"))                     # no temporary file left behind
    stamp = (tmp_path / "in" / f"{cmp.CASE}_0000.nii.gz").stat().st_mtime_ns
    cmp.write_phantom_case(tmp_path / "in", tmp_path / "truth")
    assert (tmp_path / "in" / f"{cmp.CASE}_0000.nii.gz").stat().st_mtime_ns == stamp


def test_ours_command_roi_switch(tmp_path):
    """The default-settings run is the plain CLI (ROI-first); the whole-image runs add --no-roi."""
    default = ours_command(tmp_path / "i", tmp_path / "o", tmp_path / "m", tmp_path / "t.json", roi=True)
    whole = ours_command(tmp_path / "i", tmp_path / "o", tmp_path / "m", tmp_path / "t.json")
    assert "--no-roi" not in default and whole == default + ["--no-roi"]
    assert default[default.index("--device") + 1] == "cpu" and "--timings" in default


def test_schedule_rotates_the_first_configuration():
    """Round r starts with configuration r mod n; over n rounds each goes first once, each runs once per
    round; a configuration limited to fewer rounds drops out of the later ones."""
    assert schedule([4] * 4, 4) == [[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1], [3, 0, 1, 2]]
    order = schedule([5] * 3, 5)
    assert [r[0] for r in order] == [0, 1, 2, 0, 1]
    assert all(sorted(r) == [0, 1, 2] for r in order)
    assert schedule([3, 3, 1], 3) == [[0, 1, 2], [1, 0], [0, 1]]
    assert schedule([2, 2], 1) == [[0, 1]]


def _run(label, round_index, to_file, network=None, imports=None, load=1.0, rc=0, rss=1000.0):
    timings = {} if imports is None else {
        "startup": {"imports": imports, "model_load": 0.25},
        "seconds": {"read": 0.25, "preprocess": 0.5, "network": network, "export": 0.5, "write": 0.0}}
    return RunStats(label, ["x", "-o", "out"], rc, to_file + 0.5, to_file, rss, "l", timings, round_index, load)


def test_start_up_and_time_to_first_tile_by_hand():
    r = _run(OURS, 0, 5.0, network=2.0, imports=1.5)
    assert startup_s(r) == 1.75                                        # imports + model load
    assert first_tile_s(r) == 1.75 + 0.25 + 0.5                        # + read + preprocess
    r.timings["seconds"]["localize"] = 0.5
    assert first_tile_s(r) == 3.0                                      # + localize
    assert startup_s(_run(NNUNET, 0, 30.0)) is None and first_tile_s(_run(NNUNET, 0, 30.0)) is None


def test_summary_medians_are_the_middle_values():
    s = summarise([_run(OURS, 0, 9.0, rss=1500.0), _run(OURS, 1, 5.0, rss=1300.0), _run(OURS, 2, 7.0, rss=1400.0),
                   _run("ours", 3, 6.0, rc=1, rss=1200.0)])[OURS]       # an older file's label: the same configuration
    assert len(s.runs) == 4 and s.returncode == 1
    assert s.median(TO_FILE) == 6.5 and s.span(TO_FILE) == (5.0, 9.0)  # even count: mean of the middle two
    s.runs.pop()
    assert s.median(TO_FILE) == 7.0 and s.cell(TO_FILE) == "7.00 (5.00-9.00)"
    assert s.cell(lambda r: r.peak_rss_mib, fmt=",.0f") == "1,400 (1,300-1,500)"
    assert s.cell(lambda r: None) == "-"
    one = summarise([_run(NNUNET, 0, 30.0), _run(NNUNET, 1, 31.0, rc=0)])
    assert list(one) == [NNUNET] and one[NNUNET].cell(TO_FILE) == "30.50 (30.00-31.00)"


def test_report_from_interleaved_rounds_uses_medians():
    """Three rotated rounds of four configurations: every figure and target comes from the medians (the
    means would miss the ratio target: 6.3 / 32.7), the load range and every run are listed."""
    labels = [OURS_DEFAULT, OURS, OURS_TORCH, NNUNET]
    data = {OURS_DEFAULT: dict(to_file=[4.5, 3.0, 12.0], network=[1.0, 1.2, 0.9], imports=[1.5, 1.6, 1.7]),
            OURS: dict(to_file=[5.4, 4.5, 9.0], network=[2.0, 2.5, 2.4], imports=[1.5, 1.6, 1.7]),
            OURS_TORCH: dict(to_file=[9.0, 10.0, 11.0], network=[6.0, 7.0, 8.0], imports=[1.3, 1.4, 1.5]),
            NNUNET: dict(to_file=[30.0, 40.0, 28.0])}
    runs, load = [], 0.5
    for r, order in enumerate(schedule([3] * 4, 3)):
        for i in order:
            d = data[labels[i]]
            runs.append(_run(labels[i], r, d["to_file"][r], d.get("network", [None] * 3)[r],
                             d.get("imports", [None] * 3)[r], load=load, rss=2000.0 if labels[i] == NNUNET else 1000.0))
            load += 0.25
    runs[0].timings["seconds"]["localize"] = 0.4                       # the default run's localiser, round 1
    text = report(runs, {}, {0: "background", 1: "liver"}, "CPU: test", "m", 2)
    assert "3 interleaved round(s)" in text and "before each run: 0.50-3.25" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert rows[1] == "| ours, default settings | 3 | 4.50 (3.00-12.00) | 5.00 (3.50-12.50) | 1,000 (1,000-1,000) | 0 | - |"
    assert rows[2] == "| ours, whole image | 3 | 5.40 (4.50-9.00) | 5.90 (5.00-9.50) | 1,000 (1,000-1,000) | 0 | - |"
    assert rows[4] == "| nnU-Net | 3 | 30.00 (28.00-40.00) | 30.50 (28.50-40.50) | 2,000 (2,000-2,000) | 0 | - |"
    assert "| ours / nnU-Net time (no TTA) | 0.18 | <= 0.33 | yes |" in text             # 5.4 / 30
    assert "| ours, default settings / nnU-Net time (issue #16; the shipped default, ROI-first) | 0.15 | <= 0.20 | yes |" in text
    assert "| ours, whole image / nnU-Net time (issue #16; like-for-like: the same whole-image work) | 0.18 | " \
           "<= 0.20 | yes |" in text
    assert "vs torch fp32 batch 1 | 2.92x | >= 2.5x | yes |" in text                # 7.0 / 2.4
    assert "| start-up (s): ours, whole image vs ours, torch fp32 | 1.85 vs 1.65 | not more | no |" in text
    # first tile: start-up + read 0.25 + preprocess 0.5, + localize 0.4 in the default's round 1: 2.90, 2.60, 2.70
    assert "| time to first tile (s): ours, default settings vs ours, torch fp32 | 2.70 vs 2.40 | not more | no |" \
        in text
    assert "| peak RSS (MB): ours, whole image vs ours, torch fp32 | 1,000 vs 1,000 | not more | yes |" in text
    assert "| ours, whole image | 1.85 (1.75-1.95) | 2.60 (2.50-2.70) | 1.60 | 0.25 | 0.25 | 0.50 | 2.40 |" in text
    every = [ln for ln in text.splitlines() if ln.startswith("| 2 | ")]
    assert [ln.split(" | ")[1] for ln in every] == [OURS, OURS_TORCH, NNUNET, OURS_DEFAULT]
