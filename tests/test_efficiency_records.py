"""Our efficiency CSVs are interchangeable with the organisers': for every per-case JSON committed
under benchmarks/results/, the row of the committed `*_Efficiency.csv` beside it equals, column by
column and as text, the row the organisers' load_json.py writes for that JSON.

The expected row is rebuilt here from load_json.py's maths as docs/efficiency.md documents it, on
purpose without benchmarks.flare.summary (which is what is being checked):
  Name                = JSON file name up to its first dot + ".nii.gz"
  Time                = np.round(time, 2)        (time = 0.1 x number of samples when the key is absent)
  MaxGPU_Mem          = np.round(max(gpu_memory))
  AUC_GPU_Time        = np.round(sum(gpu_memory) x 0.1)
  MaxCPU_Utilization  = np.round(max(100 - idle), 2)        idle = third entry of each cpu_list item
  AUC_CPU_Time        = np.round(sum(100 - idle) x 0.1, 2)
  MaxRAM              = np.round(max(RAM_list), 2)
  AUC_RAM_Time        = np.round(sum(RAM_list) x 0.1)
Sums are Python's left-to-right sums of the lists, numbers are written by the csv module (repr of the
float), as load_json.py does.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
COLUMNS = ["Name", "Time", "MaxGPU_Mem", "AUC_GPU_Time", "MaxCPU_Utilization", "AUC_CPU_Time", "MaxRAM",
           "AUC_RAM_Time"]
PERIOD_S = 0.1


def _case_jsons() -> list[Path]:
    out = []
    for p in sorted(RESULTS.rglob("*.json")):
        if "tmp" in p.relative_to(RESULTS).parts:
            continue
        try:
            if "gpu_memory" in json.loads(p.read_text()):
                out.append(p)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return out


def load_json_row(path: Path) -> list[str]:
    """The organisers' CSV row for one case JSON, as text."""
    js = json.loads(path.read_text())
    gpu = js["gpu_memory"]
    used = [100 - c[2] for c in js["cpu_list"]]
    ram = js["RAM_list"]
    time_s = js["time"] if "time" in js else PERIOD_S * len(gpu)
    values = [np.round(time_s, 2), np.round(max(gpu)), np.round(sum(gpu) * PERIOD_S),
              np.round(max(used), 2), np.round(sum(used) * PERIOD_S, 2),
              np.round(max(ram), 2), np.round(sum(ram) * PERIOD_S)]
    buf = io.StringIO()
    csv.writer(buf).writerow([path.name.split(".")[0] + ".nii.gz"] + values)
    return next(csv.reader(io.StringIO(buf.getvalue())))


CASES = _case_jsons()


def _efficiency_csvs() -> list[Path]:
    return [p for p in sorted(RESULTS.rglob("*_Efficiency.csv")) if "tmp" not in p.relative_to(RESULTS).parts]


def test_each_efficiency_csv_holds_exactly_the_cases_of_its_folder():
    """One row per per-case JSON beside it, no row without its JSON, no JSON without its row."""
    csvs = _efficiency_csvs()
    assert csvs, f"no committed *_Efficiency.csv under {RESULTS}"
    assert sorted({p.parent for p in CASES}) == sorted({c.parent for c in csvs})
    for path in csvs:
        with open(path, newline="") as f:
            names = [row["Name"] for row in csv.DictReader(f)]
        jsons = sorted(p.name.split(".")[0] + ".nii.gz" for p in CASES if p.parent == path.parent)
        assert sorted(names) == jsons and len(set(names)) == len(names), path.relative_to(RESULTS)


@pytest.mark.parametrize("path", CASES, ids=[str(p.relative_to(RESULTS)) for p in CASES])
def test_committed_csv_row_is_load_json_row(path):
    csvs = sorted(path.parent.glob("*_Efficiency.csv"))
    assert len(csvs) == 1, f"{path.parent}: expected one *_Efficiency.csv, found {[c.name for c in csvs]}"
    with open(csvs[0], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:8] == COLUMNS
    expected = load_json_row(path)
    got = [r[:8] for r in rows[1:] if r[0] == expected[0]]
    assert got == [expected], f"{csvs[0].name}: row for {expected[0]} differs from load_json.py's"


def test_load_json_row_by_hand(tmp_path):
    # The rebuild itself, on numbers checked by hand: 13293.5 x 0.1 = 1329.35 -> 1329; used CPU 15, 60
    # -> max 60.0, 75 x 0.1 = 7.5; RAM 1000, 1500.5 -> 250.05 -> 250; 2.5 rounds half to even -> 2.
    p = tmp_path / "amos_0507.json"
    p.write_text(json.dumps({"gpu_memory": [100.0, 5000.0, 4096.0, 4097.5, 0.0], "time": 16.4951,
                             "cpu_list": [[10.0, 5.0, 85.0], [50.0, 10.0, 40.0]], "RAM_list": [1000.0, 1500.5]}))
    assert load_json_row(p) == ["amos_0507.nii.gz", "16.5", "5000.0", "1329.0", "60.0", "7.5", "1500.5", "250.0"]
    # integers in the JSON stay integers through np.round: load_json.py writes '60', not '60.0'
    p.write_text(json.dumps({"gpu_memory": [100, 5000], "time": 1, "cpu_list": [[10, 5, 85], [50, 10, 40]],
                             "RAM_list": [1000, 1500]}))
    assert load_json_row(p) == ["amos_0507.nii.gz", "1", "5000", "510.0", "60", "7.5", "1500", "250.0"]
    p.write_text(json.dumps({"gpu_memory": [10.0, 15.0], "cpu_list": [[0, 0, 100], [0, 0, 100]],
                             "RAM_list": [1.0, 1.0]}))
    assert load_json_row(p)[:4] == ["amos_0507.nii.gz", "0.2", "15.0", "2.0"]  # no time: 0.1 x 2 samples
