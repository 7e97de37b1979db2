"""A short soak (benchmarks/studies/soak.py): 15 copies of a sample case in one process with the shipped
model; resident memory must not grow with the number of cases (loose bound: the peak after case 15
within 40 MB of the peak after case 5; the full 120-case run is the benchmark's)."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.studies.soak import DEFAULT_SAMPLE, REPO, run_soak, summarise


@pytest.mark.skipif(not (REPO / "weights" / "fold_all" / "checkpoint_final.pth").is_file(),
                    reason="the shipped model (weights/) is not in this checkout")
def test_memory_does_not_grow_with_cases():
    records = run_soak(15, DEFAULT_SAMPLE, REPO / "weights")
    assert [r["ok"] for r in records] == [True] * 15, [r["error"] for r in records if not r["ok"]]
    assert [r["index"] for r in records] == list(range(1, 16))
    growth = records[14]["peak_rss_mb"] - records[4]["peak_rss_mb"]
    assert growth < 40.0, records
    current = records[14]["rss_mb"] - records[4]["rss_mb"]
    assert current < 40.0, records
    assert summarise(records)["cases"] == 15


def test_links_and_summary(tmp_path):
    from benchmarks.studies.soak import link_cases
    link_cases(DEFAULT_SAMPLE, tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"soak_{i:04d}_0000.nii.gz" for i in range(3)]
    assert all(p.resolve() == Path(DEFAULT_SAMPLE).resolve() for p in tmp_path.iterdir())
    records = [{"index": i + 1, "ok": True, "seconds": 1.0 + i, "cpu_seconds": 2.0, "rss_mb": 100.0 + i,
                "peak_rss_mb": 200.0 + i}
               for i in range(20)]
    s = summarise(records)
    assert (s["peak_rss_mb_after_reference"], s["peak_rss_mb_after_all"], s["peak_growth_mb"]) == (211.0, 219.0, 8.0)
    assert s["within_bound"] and s["median_seconds_first_12"] == 7.0 and s["median_seconds_last_12"] == 15.0
