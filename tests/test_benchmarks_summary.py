"""benchmarks.flare.summary: the official load_json.py maths and the tolerance/trapezoid variants,
checked against hand-computed traces."""
from __future__ import annotations

import csv
import json

import pytest

from benchmarks.flare.summary import (
    OFFICIAL_COLUMNS,
    CaseTrace,
    load_case,
    markdown_table,
    official_auc,
    official_max,
    official_time,
    summarise,
    summarise_folder,
    tolerant_auc,
    tolerant_time,
    trapezoid_auc,
)

# Hand-computed trace: sum = 13293.5 -> *0.1 = 1329.35 -> AUC 1329; above 4096 MiB: 904 + 1.5 = 905.5
# -> 90.55 MiB*s; trapezoid over t = [0, .1, .25, .35, .5]:
# 2550*.1 + 4548*.15 + 4096.75*.1 + 2048.75*.15 = 255 + 682.2 + 409.675 + 307.3125 = 1654.1875.
SAMPLES = [100.0, 5000.0, 4096.0, 4097.5, 0.0]
STAMPS = [10.0, 10.1, 10.25, 10.35, 10.5]


def test_official_columns_by_hand():
    assert official_time(16.5) == 16.5
    assert official_time(12.3449) == 12.34
    assert official_max(SAMPLES) == 5000.0
    assert official_auc(SAMPLES) == 1329.0


def test_official_rounding_is_numpy_half_to_even():
    # 25 MiB summed -> 2.5 MiB*s -> 2 (not 3); 35 -> 3.5 -> 4
    assert official_auc([10.0, 15.0]) == 2.0
    assert official_auc([10.0, 25.0]) == 4.0
    assert official_max([4096.5]) == 4096.0  # np.round(4096.5) -> 4096
    assert official_time(0.125) == 0.12      # half to even at 2 decimals


def test_tolerance_variants_by_hand():
    assert tolerant_time(16.5) == pytest.approx(1.5)
    assert tolerant_time(9.0) == 0.0                       # floored at zero
    assert tolerant_time(20.0, tolerance_s=2.0) == 18.0
    assert tolerant_auc(SAMPLES) == pytest.approx(90.55)
    assert tolerant_auc([1000.0, 2000.0]) == 0.0
    # FLARE22 page: a stuck container scores AUC = 3600 * (10240 - 2048) = 29,491,200 MiB*s
    assert tolerant_auc([10240.0] * 36000, tolerance_mib=2048) == pytest.approx(3600 * (10240 - 2048))


def test_trapezoid_by_hand():
    assert trapezoid_auc(STAMPS, SAMPLES) == pytest.approx(1654.1875)
    assert trapezoid_auc([0.0], [5.0]) == 0.0
    with pytest.raises(ValueError, match="2 timestamps for 3 samples"):
        trapezoid_auc([0.0, 1.0], [1.0, 2.0, 3.0])


def test_empty_trace_is_an_error():
    with pytest.raises(ValueError, match="no memory samples"):
        official_max([])


def test_summarise_row():
    tr = CaseTrace("amos_0507", 16.5, SAMPLES, STAMPS,
                   cpu_list=[[10, 5, 85], [50, 10, 40]], ram_mib=[1000.0, 1500.5],
                   source="nvml", device="GPU X", output="ok", image_size="320, 290, 72")
    r = summarise(tr)
    assert [r[c] for c in OFFICIAL_COLUMNS] == ["amos_0507.nii.gz", 16.5, 5000.0, 1329.0, 60.0, 7.5, 1500.5, 250.0]
    assert r["Time_tol"] == 1.5 and r["AUC_GPU_Time_tol"] == pytest.approx(90.6, abs=0.05)
    assert r["AUC_GPU_Time_trapz"] == pytest.approx(1654.2, abs=0.05)
    assert r["Samples"] == 5 and r["Mean_period_s"] == 0.125
    # a trace without a `sampler` was lean-timed; the official-timed columns stay empty
    assert r["Sampler"] == "lean" and r["AUC_GPU_Time_lean"] == 1329.0 and r["Period_lean_s"] == 0.125
    assert r["AUC_GPU_Time_official"] == r["MaxGPU_Mem_official"] == r["Period_official_s"] == ""


def test_summarise_row_with_both_sampler_timings():
    # official keys from the official-timed sampler, the lean trace of the same run beside it
    tr = CaseTrace("amos_0507", 16.5, SAMPLES, STAMPS, sampler="official",
                   other_traces={"lean": {"gpu_memory": [100.0, 5000.0, 5001.0, 4096.0, 4097.5, 0.0],
                                          "timestamps": [0.0, 0.08, 0.16, 0.24, 0.32, 0.40]}})
    r = summarise(tr)
    assert r["Sampler"] == "official" and r["AUC_GPU_Time"] == r["AUC_GPU_Time_official"] == 1329.0
    assert r["MaxGPU_Mem_official"] == 5000.0 and r["Period_official_s"] == 0.125
    # 18294.5 * 0.1 = 1829.45 -> 1829
    assert r["AUC_GPU_Time_lean"] == 1829.0 and r["MaxGPU_Mem_lean"] == 5001.0 and r["Period_lean_s"] == 0.08


def test_missing_time_uses_interval_times_samples():
    # load_json.py: no 'time' key -> time = 0.1 * len(gpu_memory)
    assert summarise(CaseTrace("c", None, [1.0] * 37))["Time"] == 3.7


def test_reads_an_official_json_and_writes_csv_and_table(tmp_path):
    # The official resource_eval.py writes only gpu_memory and time; names come from the file name.
    (tmp_path / "amos_0540.json").write_text(json.dumps({"gpu_memory": SAMPLES, "time": 16.5}))
    (tmp_path / "amos_0507.json").write_text(json.dumps(
        {"gpu_memory": [10.0, 15.0], "time": 3.004, "timestamps": [0.0, 0.1], "memory_source": "rss-tree",
         "device": "CPU: test", "output": "missing", "image_size": "1, 2, 3"}))
    rows, csv_path, png, md = summarise_folder(tmp_path, tmp_path / "team", title="T")
    assert [r["Name"] for r in rows] == ["amos_0507.nii.gz", "amos_0540.nii.gz"]  # sorted, as load_json.py
    with open(csv_path) as f:
        got = list(csv.reader(f))
    assert got[0][:8] == OFFICIAL_COLUMNS
    assert got[1][:4] == ["amos_0507.nii.gz", "3.0", "15.0", "2.0"]
    assert got[2][:4] == ["amos_0540.nii.gz", "16.5", "5000.0", "1329.0"]
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    text = md.read_text()
    assert "| amos_0507.nii.gz (missing) | 1, 2, 3 | 3.00 | 15 | - | 2 |" in text
    assert "| **mean** | | 9.75 | 2,508 | - | 666 |" in text   # (3+16.5)/2, (15+5000)/2, (2+1329)/2 -> 665.5
    assert "CPU fallback" in text


def test_integer_samples_are_written_as_load_json_writes_them(tmp_path):
    # np.round keeps an integer an integer, and load_json.py's CSV then says '5000', not '5000.0'
    (tmp_path / "c1.json").write_text(json.dumps({"gpu_memory": [100, 5000], "time": 1, "RAM_list": [1000, 1500],
                                                  "cpu_list": [[10, 5, 85], [50, 10, 40]]}))
    _rows, csv_path, _png, _md = summarise_folder(tmp_path, tmp_path / "t")
    with open(csv_path) as f:
        got = list(csv.reader(f))
    assert got[1][:8] == ["c1.nii.gz", "1", "5000", "510.0", "60", "7.5", "1500", "250.0"]


def test_load_case_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="x.json: cannot read case JSON"):
        load_case(bad)
    bad.write_text("{}")
    with pytest.raises(ValueError, match="x.json: no 'gpu_memory'"):
        load_case(bad)


def test_markdown_gpu_header():
    rows = [summarise(CaseTrace("a", 1.0, [1.0, 2.0], source="nvml"))]
    text = markdown_table(rows, device="NVIDIA X")
    assert ("| Case | Image size | Running time (s) | Max GPU (MB) | Total GPU (MB·s), official-timed sampler | "
            "Total GPU (MB·s), lean sampler |") in text
    assert "Device: NVIDIA X" in text and "CPU fallback" not in text


def test_names_and_older_csvs(tmp_path):
    from benchmarks.flare.summary import case_id, official_name, read_efficiency_csv
    assert official_name("/x/amos_0540.json") == "amos_0540.nii.gz"
    assert official_name("amos_0540_0000.json") == "amos_0540_0000.nii.gz"  # the official harness's own JSON
    assert case_id("amos_0540.nii.gz") == case_id("amos_0540") == "amos_0540"
    old = tmp_path / "old_Efficiency.csv"   # written before Name carried the ending
    old.write_text("Name,Time,MaxGPU_Mem,Output\namos_0540,16.5,5000.0,ok\n")
    new = tmp_path / "new_Efficiency.csv"
    new.write_text("Name,Time,MaxGPU_Mem,Output\namos_0540.nii.gz,16.5,5000.0,ok\n")
    for p in (old, new):
        rows = read_efficiency_csv(p)
        assert list(rows) == ["amos_0540"] and rows["amos_0540"]["Time"] == 16.5
        assert rows["amos_0540"]["Output"] == "ok"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv: no 'Name' column"):
        read_efficiency_csv(bad)
