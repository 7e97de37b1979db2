"""benchmarks.studies.roi's table: totals and ratios from the rows, time columns dropped for untimed runs."""
from __future__ import annotations

from benchmarks.studies.roi import markdown


def _row(case, plain_s, roi_s, dsc, tiles, box=(0.3, "box")):
    return {"set": "large", "case": case, "plain_s": plain_s, "roi_s": roi_s, "localize_s": 0.5,
            "plain_gb": 1.5, "roi_gb": 1.0, "plain_tiles": tiles, "roi_tiles": tiles // 2,
            "plain_dsc": dsc, "roi_dsc": dsc + 0.01, "plain_nsd": dsc, "roi_nsd": dsc,
            "decision": {"fraction": box[0], "reason": box[1], "box": [[0, 1]] * 3 if box[1] == "box" else None},
            "load": [1.0, 1.1, 1.2, 1.3], "paper_tiles": {"whole": 200, "roi": 60, "reason": "box", "fraction": 0.3}}


def test_totals_ratios_and_untimed_table():
    rows = [_row("a", 10.0, 5.0, 0.80, 36), _row("b", 30.0, 15.0, 0.90, 64, (1.0, "box covers 95 % of the image"))]
    text = markdown(rows, "# title")
    total = next(line for line in text.splitlines() if line.startswith("| **large (all 2)**"))
    assert "**40.00** | **20.00**" in total and "**0.50**" in total and "100 / 50" in total
    assert "**85.00 / 86.00**" in total
    assert "| a | 30 |" in text and "whole (box covers 95 % of the image)" in text
    assert "| **all** | **400** | **120** | **0.30** |" in text
    untimed = markdown(rows, "# title", timed=False)
    header = next(line for line in untimed.splitlines() if line.startswith("| set"))
    assert "time" not in header and "load" not in header and "DSC no ROI / ROI" in header
    assert all(line.count("|") == header.count("|") for line in untimed.splitlines()
               if line.startswith("| ") and "large" in line)
    assert "| **all** | **400** | **120** | **0.30** |" in untimed
