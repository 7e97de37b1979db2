"""benchmarks.studies.roi's table: totals and ratios from the rows for each mode (no ROI, ROI, box grid),
time columns dropped for untimed runs; its label agreement on real label files."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from benchmarks.studies.roi import label_agreement, markdown


def _row(case, plain_s, dsc, tiles, box=(0.3, "box")):
    row = {"set": "large", "case": case, "localize_s": 0.5,
           "decision": {"fraction": box[0], "reason": box[1], "box": [[0, 1]] * 3 if box[1] == "box" else None},
           "load": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5],
           "paper_tiles": {"whole": 200, "roi": 200, "box": 60, "reason": "box", "fraction": 0.3}}
    for mode, time_share, tile_share, gain, gb in (("plain", 1.0, 1, 0.0, 1.5), ("roi", 1.1, 1, 0.01, 1.0),
                                                   ("box", 0.5, 2, 0.02, 1.2)):
        row.update({f"{mode}_s": plain_s * time_share, f"{mode}_tiles": tiles // tile_share,
                    f"{mode}_dsc": dsc + gain, f"{mode}_nsd": dsc, f"{mode}_gb": gb})
    row["roi_agreement"] = {"worst_label": "LK", "worst_dice": 1.0, "labels": 13}
    row["box_agreement"] = {"worst_label": "RAG", "worst_dice": 0.9 if case == "a" else 0.8, "labels": 13}
    return row


def test_totals_ratios_and_untimed_table():
    rows = [_row("a", 10.0, 0.80, 36), _row("b", 30.0, 0.90, 64, (1.0, "box covers 95 % of the image"))]
    text = markdown(rows, "# title")
    total = next(line for line in text.splitlines() if line.startswith("| **large (all 2)**"))
    # times 40 / 44 / 20 s; ratios 1.10 and 0.50; tiles 100 / 100 / 50; DSC means 85 / 86 / 87
    assert "**40.00 / 44.00 / 20.00**" in total and "**1.10 / 0.50**" in total and "100 / 100 / 50" in total
    assert "**85.00 / 86.00 / 87.00**" in total and "1.000 / 0.800" in total and "| 1.50 |" in total
    assert "| a | 30 |" in text and "whole (box covers 95 % of the image)" in text
    assert "1.000 (LK) / 0.900 (RAG)" in text
    assert "| **all** | **400** | **400 (1.00)** | **120 (0.30)** |" in text
    untimed = markdown(rows, "# title", timed=False)
    header = next(line for line in untimed.splitlines() if line.startswith("| set"))
    assert "time" not in header and "load" not in header and "ratio" not in header and "DSC" in header
    assert all(line.count("|") == header.count("|") for line in untimed.splitlines()
               if line.startswith("| ") and "large" in line)
    assert "| **all** | **400** | **400 (1.00)** | **120 (0.30)** |" in untimed


def test_label_agreement_lowest_dice_over_labels_with_enough_voxels(tmp_path):
    reference = np.zeros((10, 40, 40), np.uint8)
    reference[:, :20, :] = 1                      # 8000 voxels
    reference[:, 20:30, :10] = 2                  # 1000 voxels
    reference[0, 35, 35] = 3                      # 1 voxel: below the 1,000-voxel floor, not judged
    other = reference.copy()
    other[:, 20:25, :10] = 0                      # label 2 halved: Dice 2*500/(1000+500) = 0.667
    other[0, 35, 35] = 0
    for name, array in (("ref", reference), ("other", other)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / f"{name}.nii.gz"))
    agreement = label_agreement(tmp_path / "ref.nii.gz", tmp_path / "other.nii.gz")
    assert agreement["labels"] == 2 and agreement["worst_label"] == "RK"   # label 2 is the right kidney
    assert abs(agreement["worst_dice"] - 2 / 3) < 1e-12


def test_a_case_whose_localiser_the_default_skipped_says_so():
    ran, skipped = _row("a", 10.0, 0.80, 36), _row("b", 30.0, 0.90, 64)
    skipped["decision"]["localizer_run"] = False
    text = markdown([ran, skipped], "# title")
    line_a = next(line for line in text.splitlines() if line.startswith("| large | a |"))
    line_b = next(line for line in text.splitlines() if line.startswith("| large | b |"))
    assert "localiser not run" in line_b and "localiser not run" not in line_a
