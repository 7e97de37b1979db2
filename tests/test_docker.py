"""The real container, run the organisers' way (docker/smoke.py) on the committed sample cases.

Skips when no Docker engine is reachable (`docker info` fails). Otherwise builds the CPU image with
docker/build.sh (Docker's layer cache makes this a no-op when .ci/docker_smoke.sh already built it), or
uses FLARE_DOCKER_IMAGE as it is when set (e.g. flare-mri-seg:cuda, which also runs on the CPU).
The sample runs that repeat docker/smoke.py are skipped when build/docker-smoke.json records that it
passed on this very image (content id) and these sample files, as .ci/docker_smoke.sh does just before
the suite in CI. The contract check and the container-versus-host comparison always run (they check what
the smoke run does not; one sample case, seconds on the CPU).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def _engine_reachable() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


pytestmark = [
    pytest.mark.skipif(not (ROOT / "weights" / "dataset.json").is_file(),
                       reason="weights/ holds no default model: the image cannot be built"),
    pytest.mark.skipif(not _engine_reachable(), reason="no Docker engine reachable"),
]


def _load_smoke():
    spec = importlib.util.spec_from_file_location("flare_docker_smoke", ROOT / "docker" / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


smoke = _load_smoke()
CASES = smoke.sample_cases(SAMPLES) if (SAMPLES / "inputs").is_dir() else []


@pytest.fixture(scope="module")
def image() -> str:
    """Tag of the image under test, built from this checkout unless FLARE_DOCKER_IMAGE names one."""
    given = os.environ.get("FLARE_DOCKER_IMAGE")
    if given:
        return given
    proc = subprocess.run([str(ROOT / "docker" / "build.sh"), "--variant", "cpu", "--tag", "flare-mri-seg:latest"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, f"docker/build.sh failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return "flare-mri-seg:latest"


def test_samples_are_committed():
    assert CASES, f"{SAMPLES / 'inputs'}: no <case>_0000.nii.gz sample cases"
    for case in CASES:
        assert (SAMPLES / "labels" / f"{case}.nii.gz").is_file(), f"no ground truth for sample {case}"


@pytest.fixture(scope="module")
def not_checked_before(image):
    if os.environ.get("FLARE_DOCKER_RERUN") != "1" and smoke.passed_before(image, SAMPLES, 0.8):
        pytest.skip(f"docker/smoke.py passed on this image ({smoke.image_id(image)[:19]}) and these samples: "
                    f"{smoke.DEFAULT_RECORD.relative_to(ROOT)}; FLARE_DOCKER_RERUN=1 runs them again")


@pytest.mark.parametrize("case", CASES)
def test_organisers_command_on_sample(image, not_checked_before, case, tmp_path):
    # The first case also runs with --network none: nothing at run time may need the network.
    result = smoke.check_case(image, SAMPLES, case, tmp_path, min_dice=0.8, network_none=(case == CASES[0]))
    assert result.problems == [], f"{case}: {result.problems}\ncontainer output:\n{result.log}"
    assert result.mean_dice >= 0.8


def test_container_labels_equal_the_host_predictor(image, tmp_path):
    """The image segments a sample as this checkout's predictor does in-process with the same weights
    (inference.api.segment_folder), in the precision the container's first line names (the CPU image
    chooses as this checkout does on this CPU; the CUDA image, torch on a CPU, runs fp32). The libraries
    in the image may be other builds than here, so float rounding can flip a few boundary voxels:
    >= 99.9 % of voxels must agree."""
    import numpy as np
    import SimpleITK as sitk

    from inference.api import ModelSpec, segment_folder

    case = min(CASES, key=lambda c: (SAMPLES / "inputs" / f"{c}_0000.nii.gz").stat().st_size)  # quickest
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    shutil.copy2(SAMPLES / "inputs" / f"{case}_0000.nii.gz", inputs)
    code, log, _ = smoke.run_container(image, f"flare-test-host-{os.getpid()}", inputs, outputs,
                                       ["--network", "none"], timeout=600)
    assert code == 0, log[-2000:]
    from inference.loading import load_model
    first_line = log.splitlines()[0]
    assert first_line.startswith("precision "), first_line
    precision = first_line.split()[1]
    model = load_model(ROOT / "weights", device="cpu", precision=precision)
    if "(openvino" in first_line:   # the CPU image decides as this checkout does on this CPU
        assert load_model(ROOT / "weights", device="cpu").plan.precision == precision, first_line
    results = segment_folder(inputs, tmp_path / "host", model)
    assert [r.ok for r in results] == [True], results[0].error
    container = sitk.ReadImage(str(outputs / f"{case}.nii.gz"))
    host = sitk.ReadImage(str(tmp_path / "host" / f"{case}.nii.gz"))
    assert container.GetSize() == host.GetSize() and container.GetSpacing() == host.GetSpacing()
    assert container.GetOrigin() == host.GetOrigin() and container.GetDirection() == host.GetDirection()
    a, b = sitk.GetArrayFromImage(container), sitk.GetArrayFromImage(host)
    assert len(np.unique(b)) >= 2                                    # a non-trivial segmentation
    assert np.mean(a == b) >= 0.999


def test_empty_inputs_exit_cleanly(image, not_checked_before, tmp_path):
    assert smoke.check_empty_inputs(image, tmp_path) == []


def test_image_follows_the_contract(image):
    info = json.loads(subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True,
                                     check=True).stdout)[0]["Config"]
    assert info["WorkingDir"] == "/workspace"
    assert not any(e.startswith("CUDA_VISIBLE_DEVICES=") for e in info["Env"] or [])
    script = ("ls /workspace; ls /workspace/weights; "
              "python -m pip --version >/dev/null 2>&1 && echo HAS_PIP; "
              "for c in gcc cc g++ make; do command -v $c >/dev/null && echo HAS_$c; done; "
              "ls /root/.cache/pip 2>/dev/null && echo HAS_PIP_CACHE; "
              "python -c 'import sympy' 2>/dev/null && echo HAS_SYMPY; "
              "python -c 'import triton' 2>/dev/null && echo HAS_TRITON; "
              "grep -c CUDA_VISIBLE_DEVICES= predict.sh || true")
    listing = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "sh", "-c", script],
                             capture_output=True, text=True, check=True).stdout.split()
    assert {"predict.sh", "inference", "weights", "plans.json", "dataset.json"} <= set(listing)
    assert "tests" not in listing and "samples" not in listing
    assert not [w for w in listing if w.startswith("HAS_")], listing
    assert listing[-1] == "0"  # predict.sh never sets CUDA_VISIBLE_DEVICES


def test_cpu_image_holds_no_torch(image):
    """The CPU image (built without TORCH_SPEC) runs the IR with numpy and OpenVINO: no torch, no nnunetv2,
    and the predictor never tries to import them (a MIND model included: numpy descriptors)."""
    torch_spec = subprocess.run(["docker", "image", "inspect", "-f", '{{index .Config.Labels "org.flare.torch"}}',
                                 image], capture_output=True, text=True, check=True).stdout.strip()
    if torch_spec:
        pytest.skip(f"{image} is built with {torch_spec}")
    script = ("import importlib.util as u, sys; sys.path.insert(0, '/workspace'); "
              "print([m for m in ('torch', 'nnunetv2', 'dynamic_network_architectures') if u.find_spec(m)]); "
              "import inference.cli, inference.engines.numpy_engine.mind; "
              "from inference.loading import load_model; load_model('/workspace/weights'); "
              "print('torch' in sys.modules)")
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "python", "-c", script],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "False"], out
