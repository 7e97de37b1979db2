"""benchmarks.flare.harness: the organiser-style loop in direct mode (a stand-in predictor) and in docker
mode end to end (skipped without a Docker engine)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from benchmarks.flare.harness import (
    check_output,
    direct_argv,
    docker_argv,
    docker_engine_available,
    find_cases,
    main,
    remove_container_now,
)
from benchmarks.flare.summary import OFFICIAL_COLUMNS

# A stand-in predictor: holds 40 MiB, writes a thresholded label map with the input's geometry for
# case 'good', a wrong-size one for 'shrunk', nothing for 'absent'.
FAKE = textwrap.dedent("""
    import os, sys, time
    import SimpleITK as sitk
    inp, out = sys.argv[1], sys.argv[2]
    hold = bytearray(40 * 1024 * 1024)
    time.sleep(0.3)
    for f in sorted(os.listdir(inp)):
        case = f[:-len('_0000.nii.gz')]
        img = sitk.ReadImage(os.path.join(inp, f))
        lab = sitk.Cast(img > 50, sitk.sitkUInt8)
        if case == 'absent':
            continue
        if case == 'shrunk':
            lab = lab[:-1]
        sitk.WriteImage(lab, os.path.join(out, case + '.nii.gz'))
    print('done', sorted(os.listdir(inp)))
""")


def _write_case(folder, case, size=(24, 20, 8), spacing=(1.5, 1.5, 3.0)):
    arr = (np.random.default_rng(0).random(size[::-1]) * 100).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((10.0, -5.0, 2.0))
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(folder / f"{case}_0000.nii.gz"))
    return folder / f"{case}_0000.nii.gz"


def test_direct_mode_end_to_end(tmp_path):
    inp = tmp_path / "cases"
    for c in ("good", "shrunk", "absent"):
        _write_case(inp, c)
    (inp / "notes.txt").write_text("not a case")
    script = tmp_path / "fake_predict.py"
    script.write_text(FAKE)
    res = tmp_path / "res"
    rc = main(["-i", str(inp), "-o", str(res), "--direct", "--memory", "cpu", "--label", "fake",
               "--command", f"{{python}} {script} {{input}} {{output}}"])
    assert rc == 0
    rows = list(csv.DictReader((res / "fake_Efficiency.csv").read_text().splitlines()))
    assert list(rows[0])[:8] == OFFICIAL_COLUMNS
    by = {r["Name"]: r for r in rows}
    assert set(by) == {"good.nii.gz", "shrunk.nii.gz", "absent.nii.gz"}  # load_json.py's Name
    assert by["good.nii.gz"]["Output"] == "ok"
    assert by["absent.nii.gz"]["Output"] == "missing"
    assert by["shrunk.nii.gz"]["Output"].startswith("geometry mismatch: size (23, 20, 8) != (24, 20, 8)")
    for r in rows:
        assert r["Memory_source"] == "rss-tree" and r["Device"].startswith("CPU: ")
        assert 40 < float(r["MaxGPU_Mem"]) < 1000  # the 40 MiB it holds plus an interpreter
        assert float(r["Time"]) >= 0.3
    js = json.loads((res / "good.json").read_text())
    assert {"gpu_memory", "time", "timestamps", "run_start", "cpu_list", "RAM_list"} <= set(js)
    assert js["gpu_memory"][0] == 0.0                       # sampling starts before the run
    assert js["timestamps"][0] < js["run_start"] < js["timestamps"][-1]
    # each run saw a fresh inputs/ holding exactly its own case
    log = (res / "logs" / "good.log").read_text()
    assert "done ['good_0000.nii.gz']" in log
    assert (res / "outputs" / "good.nii.gz").is_file() and not (res / "outputs" / "absent.nii.gz").exists()
    assert (res / "fake_memory.png").stat().st_size > 1000
    md = (res / "fake_table.md").read_text()
    assert "| absent.nii.gz (missing) | 24, 20, 8 |" in md
    assert not (res / "work").exists()


def test_failing_command_is_recorded_not_fatal(tmp_path):
    inp = tmp_path / "cases"
    _write_case(inp, "one")
    res = tmp_path / "res"
    rc = main(["-i", str(inp), "-o", str(res), "--direct", "--memory", "cpu",
               "--command", "{python} -c 'import sys; sys.exit(3)'"])
    assert rc == 0
    js = json.loads((res / "one.json").read_text())
    assert js["returncode"] == 3 and js["output"] == "missing"


CTRL_C_SCRIPT = """
import json, os, signal, sys, threading, time
from pathlib import Path
from benchmarks.flare.harness import _run_sampled
folder = Path(sys.argv[1])
marker = folder / "child.pid"
argv = [sys.executable, "-c", f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]
cleaned = []
threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
t0 = time.time()
try:
    _run_sampled(argv, None, folder / "log.txt", None, attach=False, on_interrupt=lambda: cleaned.append(True))
    outcome = "returned"
except KeyboardInterrupt:
    outcome = "interrupted"
print(json.dumps({"outcome": outcome, "seconds": time.time() - t0, "cleaned": cleaned, "child": int(marker.read_text())}))
"""


def test_ctrl_c_stops_the_child_and_runs_the_cleanup(tmp_path):
    """Ctrl-C while the harness waits for a case: the child is stopped, the cleanup runs, the interrupt
    reaches the caller. In a process of its own: a signal sent to the pytest process can land in the
    handlers of native libraries earlier tests loaded."""
    run = subprocess.run([sys.executable, "-c", CTRL_C_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "interrupted" and result["cleaned"] == [True] and result["seconds"] < 30
    with pytest.raises(ProcessLookupError):          # the child is gone
        os.kill(result["child"], 0)


def test_find_cases_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="input folder does not exist"):
        find_cases(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"no \*_0000.nii.gz files"):
        find_cases(tmp_path)
    _write_case(tmp_path, "a")
    with pytest.raises(FileNotFoundError, match=r"case\(s\) \['b'\]"):
        find_cases(tmp_path, ["b"])
    assert [c for c, _ in find_cases(tmp_path, ["a"])] == ["a"]


def test_check_output_geometry(tmp_path):
    ref = _write_case(tmp_path / "in", "c")
    img = sitk.ReadImage(str(ref))
    lab = sitk.Cast(img > 50, sitk.sitkUInt8)
    sitk.WriteImage(lab, str(tmp_path / "ok.nii.gz"))
    assert check_output(tmp_path / "ok.nii.gz", ref) == "ok"
    lab.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(lab, str(tmp_path / "moved.nii.gz"))
    assert check_output(tmp_path / "moved.nii.gz", ref).startswith("geometry mismatch: origin")
    (tmp_path / "junk.nii.gz").write_bytes(b"junk")
    assert check_output(tmp_path / "junk.nii.gz", ref).startswith("unreadable: junk.nii.gz")
    assert check_output(tmp_path / "none.nii.gz", ref) == "missing"


def test_argv_builders(tmp_path):
    from pathlib import Path
    b = direct_argv("{python} -m inference -i {input} -o {output}", "/m d", ["--device", "cpu"])
    assert b(Path("/in"), Path("/out")) == [sys.executable, "-m", "inference", "-i", "/in", "-o", "/out",
                                            "-m", "/m d", "--device", "cpu"]
    d = docker_argv("team", "team", 1)(tmp_path / "i", tmp_path / "o")
    assert d[:6] == ["docker", "container", "run", "--shm-size=28gb", "-m", "28G"]
    assert "--gpus=device=1" in d and d[-4:] == ["team:latest", "/bin/bash", "-c", "sh predict.sh"]
    assert "--gpus=device=1" not in docker_argv("team", "team", None)(tmp_path / "i", tmp_path / "o")


def _docker_base_image() -> str | None:
    """A local image with /bin/bash to build the stand-in submission from (no pulling in tests)."""
    wanted = os.environ.get("FLARE_TEST_DOCKER_BASE")
    candidates = [wanted] if wanted else ["flare-base:bookworm", "python:3.11-slim", "debian:bookworm-slim",
                                          "debian:bookworm", "ubuntu:24.04", "ubuntu:22.04"]
    for img in candidates:
        if subprocess.run(["docker", "image", "inspect", img], check=False, capture_output=True).returncode == 0:
            return img
    return None


def _wait_until_running(name: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = subprocess.run(["docker", "container", "inspect", "-f", "{{.State.Running}}", name],
                           capture_output=True, text=True)
        if r.stdout.strip() == "true":
            return
        time.sleep(0.2)
    raise AssertionError(f"container {name} never started")


def _container_exists(name: str) -> bool:
    return subprocess.run(["docker", "ps", "-a", "-q", "--filter", f"name=^{name}$"], capture_output=True,
                          text=True, check=True).stdout.strip() != ""


def test_docker_mode_end_to_end(tmp_path):
    ok, why = docker_engine_available()
    if not ok:
        pytest.skip(f"no Docker engine: {why}")
    base = _docker_base_image()
    if base is None:
        pytest.skip("no local base image with bash (set FLARE_TEST_DOCKER_BASE to one)")
    # A stand-in submission: predict.sh copies the input to outputs/<case>.nii.gz (same geometry); for a
    # case named slow* it first sleeps 120 s, as a long prediction would.
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "predict.sh").write_text(
        "for f in /workspace/inputs/*_0000.nii.gz; do\n"
        "  c=$(basename \"$f\" _0000.nii.gz)\n"
        "  case $c in slow*) sleep 120 ;; esac\n"
        "  cp \"$f\" \"/workspace/outputs/$c.nii.gz\"\n"
        "done\n")
    (ctx / "Dockerfile").write_text(f"FROM {base}\nWORKDIR /workspace\nCOPY predict.sh /workspace/predict.sh\n")
    tag = f"flarebench{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-q", "-t", f"{tag}:latest", str(ctx)], check=True, capture_output=True)
    dockerd_log = os.environ.get("DOCKERD_LOG", "/var/log/dockerd.log")
    log_start = os.path.getsize(dockerd_log) if os.access(dockerd_log, os.R_OK) else None
    try:
        inp = tmp_path / "cases"
        _write_case(inp, "amos_0001")
        _write_case(inp, "amos_0002")
        res = tmp_path / "res"
        rc = main(["-i", str(inp), "-o", str(res), "--docker", tag, "--memory", "auto"])
        assert rc == 0
        rows = {r["Name"]: r for r in csv.DictReader((res / f"{tag}_Efficiency.csv").read_text().splitlines())}
        assert set(rows) == {"amos_0001.nii.gz", "amos_0002.nii.gz"}
        assert all(r["Output"] == "ok" for r in rows.values())
        js = json.loads((res / "amos_0001.json").read_text())
        assert js["command"].startswith("docker container run --shm-size=28gb -m 28G")
        assert js["returncode"] == 0 and js["time"] > 0

        # SIGTERM or Ctrl-C while a container runs: the harness kills and removes it at once (PID 1 in
        # the container ignores the SIGTERM the client forwards, so nothing else would stop it before its
        # 120 s are up) and exits 128 + signal number with a message saying so.
        slow = tmp_path / "slow"
        _write_case(slow, "slow_0001")
        for sig in (signal.SIGTERM, signal.SIGINT):
            name = f"{tag}{sig.name.lower()}"
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.flare.harness", "-i", str(slow),
                                     "-o", str(tmp_path / name), "--docker", tag, "--name", name,
                                     "--memory", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            try:
                _wait_until_running(name)
                proc.send_signal(sig)
                # well inside the container's 120 s: the harness did not wait for it
                _, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
            assert proc.returncode == 128 + sig, err
            assert f"interrupted by {sig.name}: container {name} stopped and removed" in err
            assert not _container_exists(name)
            assert not (tmp_path / name / "slow_0001.json").exists()   # no measurement of a cut-short run
        # A container started without --rm is removed too (rm --force once it has been killed).
        plain = f"{tag}plain"
        subprocess.run(["docker", "run", "-d", "--name", plain, f"{tag}:latest", "sleep", "120"], check=True,
                       capture_output=True)
        remove_container_now(plain)
        assert not _container_exists(plain)
        if log_start is not None:
            with open(dockerd_log, errors="replace") as f:
                f.seek(log_start)
                assert "already in progress" not in f.read()
    finally:
        subprocess.run(["docker", "image", "rm", "-f", f"{tag}:latest"], check=False, capture_output=True)
