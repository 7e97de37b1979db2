"""benchmarks.studies.container_startup: the gap and its parts from the measured rows (hand-computed),
and the bare container's command (the organisers' flags, no mounts, `true` in place of predict.sh)."""
from __future__ import annotations

import subprocess

import pytest

from benchmarks.studies import container_startup
from benchmarks.studies.container_startup import breakdown, markdown


def _row(case, docker, warm, bare, total, read_cold, read_warm, voxels=0, load=1.0, chain=None):
    row = {"round": 0, "case": case, "docker_wall": docker, "bare_container": bare, "cli_total": total,
            "startup": {"imports": 0.1, "model_load": 0.08},
            "container_stages": {"read": read_cold, "network": 0.5}, "in_process_wall": warm,
            "in_process_stages": {"read": read_warm, "network": 0.5}, "network": "openvino bf16, batch 1",
            "voxels_differing": voxels, "load": [load, load + 0.2]}
    if chain is not None:
        row["chain"] = {"wall": chain, "numpy": 0.06, "openvino": 0.04, "predictor_imports": 0.02,
                        "model_load": 0.03, "compile_wait": chain - 0.25, "network": "openvino bf16, batch 1"}
    return row


def test_breakdown_medians_of_the_gap_and_its_parts():
    rows = [_row("a", 1.0, 0.6, 0.10, 0.85, 0.08, 0.02),
            _row("a", 1.2, 0.7, 0.12, 1.00, 0.07, 0.02, voxels=3),
            _row("a", 1.1, 0.5, 0.20, 0.86, 0.10, 0.02, load=2.0)]
    b = breakdown(rows)
    assert b["docker_wall"] == pytest.approx(1.1) and b["in_process_wall"] == pytest.approx(0.6)
    assert b["gap"] == pytest.approx(0.5)                            # gaps 0.4, 0.5, 0.6
    assert b["bare_container"] == pytest.approx(0.12)
    assert b["interpreter_start_and_exit"] == pytest.approx(0.05)   # 0.05, 0.08, 0.04
    assert b["stages_cold_minus_warm"] == pytest.approx({"network": 0.0, "read": 0.06})
    assert b["voxels_differing_max"] == 3 and b["load"] == pytest.approx([1.0, 2.2])
    text = markdown(rows, "# title")
    assert "| a | 1.10 | 0.60 | **0.50** | 0.12 | 0.05 | 0.10 | 0.08 | read +0.06 | 3 | 1.0-2.2 |" in text
    assert "| **all cases** |" in text and "openvino bf16, batch 1" in text
    assert "chain" not in b and "critical chain" not in text     # rows measured without it


def test_the_critical_chain_sets_the_floor_of_the_gap():
    # floor = chain wall - the warm run's stages before its network (read here; the rows have no preprocess)
    rows = [_row("a", 1.0, 0.6, 0.10, 0.85, 0.08, 0.02, chain=0.40),
            _row("a", 1.2, 0.7, 0.12, 1.00, 0.07, 0.02, chain=0.44),
            _row("b", 1.1, 0.5, 0.20, 0.86, 0.10, 0.05, chain=0.38)]
    b = breakdown(rows)
    assert b["chain"]["wall"] == pytest.approx(0.40) and b["chain"]["compile_wait"] == pytest.approx(0.15)
    assert b["gap_floor"] == pytest.approx(0.38)                       # 0.38, 0.42, 0.33
    text = markdown(rows, "# title")
    assert "| a | 0.42 | 0.06 | 0.04 | 0.02 | 0.03 | 0.17 | 0.40 | **0.45** |" in text
    assert "| **all cases** | 0.40 | 0.06 | 0.04 | 0.02 | 0.03 | 0.15 | 0.38 | **0.50** |" in text


def test_critical_chain_probe_runs_in_the_image_with_the_organisers_flags(monkeypatch):
    ran = []

    def fake_run(cmd, **kw):
        ran.append(cmd)
        out = '{"numpy": 0.06, "openvino": 0.04, "predictor_imports": 0.02, "model_load": 0.03, "compile_wait": 0.1}'
        return subprocess.CompletedProcess(cmd, 0, stdout="precision line\n" + out + "\n", stderr="")
    monkeypatch.setattr(container_startup.subprocess, "run", fake_run)
    chain = container_startup.critical_chain("img:tag")
    cmd = ran[0]
    assert "-v" not in cmd and "--rm" in cmd and cmd[-4:-1] == ["img:tag", "/bin/bash", "-c"]
    assert cmd[-1].startswith("python -c ") and 'load_model("weights", device="auto", roi=False)' in cmd[-1]
    assert chain["compile_wait"] == 0.1 and chain["wall"] >= 0


def test_the_critical_chain_probe_runs_here(tmp_path, monkeypatch):
    """The probe itself, in this checkout: every step timed, the model's networks ready."""
    import json
    import sys
    monkeypatch.chdir(container_startup.REPO)
    proc = subprocess.run([sys.executable, "-c", container_startup.CHAIN_PROBE], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(record) == {*container_startup.CHAIN_STEPS, "network"}
    assert all(record[k] >= 0 for k in container_startup.CHAIN_STEPS)


def test_bare_container_runs_true_with_the_organisers_flags(monkeypatch):
    ran = []
    monkeypatch.setattr(container_startup.subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    container_startup.bare_container("img:tag")
    cmd = ran[0]
    assert cmd[:2] == ["docker", "container"] and "-v" not in cmd and "--rm" in cmd
    assert cmd[-4:] == ["img:tag", "/bin/bash", "-c", "true"]


def test_voxels_differing_counts_on_label_files(tmp_path):
    import numpy as np
    import SimpleITK as sitk
    a = np.zeros((20, 30, 40), np.uint8)
    a[5:10, 5:10, 5:10] = 3
    b = a.copy()
    b[5, 5, 5:9] = 0
    for name, array in (("a", a), ("b", b)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / f"{name}.nii.gz"))
    assert container_startup.voxels_differing(tmp_path / "a.nii.gz", tmp_path / "b.nii.gz") == 4
    assert container_startup.voxels_differing(tmp_path / "a.nii.gz", tmp_path / "a.nii.gz") == 0
