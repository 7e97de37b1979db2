"""benchmarks.flare.volumes / table6 / capped: Table 6 grids, the combined table, the allocator-cap runner."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from benchmarks.flare.summary import CaseTrace, summarise
from benchmarks.flare.table6 import combined_table
from benchmarks.flare.volumes import (
    TABLE6,
    mri_like_array,
    table6_spacing,
    write_case,
    write_table6_cases,
)

REPO = Path(__file__).resolve().parents[1]


def test_table6_spacing_assumption_by_hand():
    # in-plane 400 mm / max(x, y); slices 250 mm / z clipped to [1, 6]
    assert table6_spacing((320, 290, 72)) == pytest.approx((1.25, 1.25, 3.4722222))
    assert table6_spacing((512, 152, 512)) == pytest.approx((0.78125, 0.78125, 1.0))   # clipped up
    assert table6_spacing((432, 432, 40)) == pytest.approx((0.9259259, 0.9259259, 6.0))  # clipped down
    assert len(TABLE6) == 8 and TABLE6["amos_8082"][0] == (1024, 1024, 82)


def test_mri_like_array_is_deterministic_and_mri_like():
    a = mri_like_array((40, 36, 10), (2.0, 2.0, 5.0), seed=3)
    assert a.shape == (10, 36, 40) and a.dtype == np.int16
    assert np.array_equal(a, mri_like_array((40, 36, 10), (2.0, 2.0, 5.0), seed=3))
    assert not np.array_equal(a, mri_like_array((40, 36, 10), (2.0, 2.0, 5.0), seed=4))
    assert (a[:, 0, 0] == 0).all()                         # zero outside the field of view
    centre = a[:, 18, 20].astype(float)
    assert centre.mean() > 200 and a.min() >= 0            # bright body, magnitude image


def test_write_case_geometry_and_cache(tmp_path):
    p = write_case(tmp_path, "amos_x", (30, 20, 6), (1.5, 1.5, 4.0))
    img = sitk.ReadImage(str(p))
    assert img.GetSize() == (30, 20, 6) and img.GetSpacing() == pytest.approx((1.5, 1.5, 4.0))
    mtime = p.stat().st_mtime_ns
    write_case(tmp_path, "amos_x", (30, 20, 6), (1.5, 1.5, 4.0))
    assert p.stat().st_mtime_ns == mtime                   # same size on disk: kept
    with pytest.raises(ValueError, match="unknown Table 6 case"):
        write_table6_cases(tmp_path, ["amos_9999"])


def test_combined_table_beside_paper():
    r = summarise(CaseTrace("amos_0540", 10.0, [100.0, 300.0], source="rss-tree", output="ok"))
    n = summarise(CaseTrace("amos_0540", 30.0, [200.0, 200.0], source="rss-tree", output="missing"))
    text = combined_table({"ours": {"amos_0540": r}, "nnU-Net": {"amos_0540": n}}, "CPU: test", "note")
    assert "### Table 6 reproduction (CPU: test)" in text
    # rows keyed by Name (with '.nii.gz') or by case id; totals per sampler timing, '-' where not recorded
    text2 = combined_table({"ours": {"amos_0540.nii.gz": r}, "nnU-Net": {"amos_0540": n}}, "CPU: test", "note")
    assert text2 == text
    assert ("| amos_0540 | 192, 192, 100 | 13.4 | 10.00 | 30.00* | 4,980 | 300 | 200* | 44,871 | - | 40 | - | 40* |"
            in text)
    assert "ours total mem. (MB·s), official-timed | ours total mem. (MB·s), lean |" in text
    assert "ours max mem. (MB)" in text  # CPU fallback is not called GPU


def test_capped_runs_a_module_and_says_when_no_cuda(tmp_path):
    mod = tmp_path / "hello_mod.py"
    mod.write_text("import sys\nprint('args', sys.argv[1:])\n")
    r = subprocess.run([sys.executable, "-m", "benchmarks.flare.capped", "--gib", "24", "--module", "hello_mod", "--",
                        "-x", "1"], check=False, capture_output=True, text=True,
                       env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "args ['-x', '1']" in r.stdout
    import torch
    if not torch.cuda.is_available():
        assert "no CUDA device: the 24 GiB allocator cap does not apply" in r.stderr
    else:
        assert "allocator capped at 24 GiB" in r.stderr
