"""benchmarks.gpu_check: the dry run (CPU, tiny sizes) goes through every step of the GPU check, and
--prepare-wheels refuses what would not travel."""
from __future__ import annotations

import csv
import json

import pytest

import benchmarks.gpu_check as gpu_check
import benchmarks.gpu_wheels as gpu_wheels


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    rc = gpu_check.main(["-o", str(out), "--dry-run", "--budget-s", "400"])
    return rc, out


def test_dry_run_writes_every_step(dry_run):
    rc, out = dry_run
    report = json.loads((out / "gpu_check.json").read_text())
    steps = report["steps"]
    assert rc == 0, {k: v.get("summary") for k, v in steps.items()}
    assert list(steps)[:5] == ["setup", "cuda_tests", "agreement", "profile", "table6"]
    assert all(s["status"] in ("ok", "skipped") for s in steps.values())
    # CUDA tests are collected and skip on a CPU; none fails
    tests = steps["cuda_tests"]["tests"]
    assert tests and {t["outcome"] for t in tests} == {"skipped"}
    assert "test_gpu_cuda.py" in steps["cuda_tests"]["files"]
    # CPU against CPU: identical labels, three runs per model
    rows = steps["agreement"]["rows"]
    assert len(rows) == 6 and all(r["agreement"] == 1.0 and r["mean_dice"] == 1.0 for r in rows)
    prof = steps["profile"]["profile"]
    assert list(prof["stages"])[-5:] == ["read", "preprocess", "network", "export", "write"]
    assert steps["table6"]["done"] == {"ours": ["dry_small", "dry_large"]}


def test_dry_run_files_name_the_environment(dry_run):
    _, out = dry_run
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_check.json", "gpu_check.md", "table6_ours_Efficiency.csv", "table6_ours_memory.png"]
    assert len(files) <= gpu_check.MAX_FILES
    import torch
    env = json.loads((out / "gpu_check.json").read_text())["environment"]
    assert env["torch"] == torch.__version__ and env["dry_run"] is True
    assert f"torch {torch.__version__}; CUDA {torch.version.cuda or '-'}" in env["line"] and "driver" in env["line"]
    assert env["line"] in (out / "gpu_check.md").read_text()
    with open(out / "table6_ours_Efficiency.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["Name"] for r in rows] == ["dry_large.nii.gz", "dry_small.nii.gz"]  # load_json.py's Name (docs/efficiency.md)
    assert all(r["Environment"] == env["line"] and r["Output"] == "ok" for r in rows)


def fake_download(size):
    def download(specs, dest, log):
        for spec in specs:
            (dest / f"{spec.split('==')[0]}-1.0-py3-none-any.whl").write_bytes(b"\0" * size)
        return 0
    return download


def test_prepare_wheels_refuses_over_the_travel_limit(tmp_path, monkeypatch, capsys):
    tree, _ = gpu_wheels.travelling_tree_bytes()
    monkeypatch.setattr(gpu_wheels, "TRAVEL_LIMIT_BYTES", tree + 3 * 1000)
    assert gpu_wheels.prepare_wheels(tmp_path / "w", download=fake_download(1000)) == 2   # 4 wheels: over
    assert "exceeds" in capsys.readouterr().out and not list((tmp_path / "w").glob("*.whl"))
    assert gpu_wheels.prepare_wheels(tmp_path / "w", download=fake_download(700)) == 0    # 2,800: fits
    assert len(list((tmp_path / "w").glob("*.whl"))) == len(gpu_wheels.CORE_WHEELS)
    out = capsys.readouterr().out
    assert "outside the repository" in out and "of the" in out


def test_wheels_are_pinned_to_the_tested_versions():
    import importlib.metadata
    assert f"nibabel=={importlib.metadata.version('nibabel')}" in gpu_wheels.pinned(gpu_wheels.CORE_WHEELS)
    assert gpu_wheels.pinned(["no-such-package-xyz"]) == ["no-such-package-xyz"]


def test_table6_cuts_runs_that_do_not_fit_the_budget(tmp_path, monkeypatch):
    import benchmarks.harness as harness
    calls = []
    monkeypatch.setattr(harness, "run_case", lambda *a, **k: calls.append(a[0]))
    image = gpu_check.write_volume(tmp_path, "c1", (20, 18, 6), seed=0, spacing_xyz=(1.5, 1.5, 3.0))
    clock = gpu_check.Clock(50)   # the first estimate is 30 s, and a run starts only if twice it fits
    res = gpu_check.table6([("c1", (20, 18, 6), lambda: image)], tmp_path, None, "cpu", {}, tmp_path / "t6", clock, 0, spec=None,
                           report=None, simpleitk=True)
    assert calls == [] and res["done"] == {"ours": []}
    assert res["skipped"][0].startswith("ours/c1 (estimate 30 s") and "cut for time" in res["summary"]
