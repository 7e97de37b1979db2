"""benchmarks.flare.sampler: the CPU fallback measures a child whose memory grows by a known amount, in both
timings (lean, official); the official CPU split's formula; each poll sleeps at least the interval;
NVML degrades cleanly without a driver, and on a GPU sees a known allocation."""
from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
import time

import pytest

from benchmarks.flare.sampler import (
    Sampler,
    SamplerError,
    SamplerSet,
    SourceSpec,
    cpu_description,
    nvml_probe,
    official_cpu_split,
    parse_docker_mem,
    resolve_source,
)

GROW_MIB = 160
# The child starts, says 'base', waits, allocates GROW_MIB MiB (bytearray: zero-filled, so resident),
# says 'grown', waits, exits.
CHILD = f"""
import sys, time
print('base', flush=True); time.sleep(1.5)
b = bytearray({GROW_MIB} * 1024 * 1024)
print('grown', flush=True); time.sleep(1.5)
"""


@pytest.mark.parametrize("mode", ["lean", "official"])
def test_cpu_sampler_sees_known_growth_of_a_child(mode):
    spec = SourceSpec("rss-tree", device=cpu_description())
    s = Sampler(spec, interval=0.02, mode=mode).start()
    time.sleep(0.2)  # samples before the run: nothing attached yet
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    s.attach(proc.pid)
    marks = {}
    for line in proc.stdout:
        marks[line.strip()] = time.time()
    proc.wait()
    ended = time.time()
    time.sleep(0.2)  # and after it
    res = s.stop()
    assert proc.returncode == 0
    t, m = res["timestamps"], res["memory"]
    assert res["source"] == "rss-tree" and res["sampler"] == mode
    assert len(t) == len(m) == len(res["cpu"]) == len(res["ram"])
    assert m[0] == 0.0 and m[-1] == 0.0  # sampling began before the run and ended after it
    # Windows well inside each phase; generous so that a loaded machine still samples in them.
    base = [v for tt, v in zip(t, m) if marks["base"] + 0.2 < tt < marks["base"] + 1.3]
    grown = [v for tt, v in zip(t, m) if marks["grown"] + 0.2 < tt < ended - 0.1]
    assert len(base) >= 3 and len(grown) >= 3
    assert statistics.median(grown) - statistics.median(base) == pytest.approx(GROW_MIB, abs=3)
    if mode == "lean":   # exact shares
        assert all(0 <= c[0] <= 100 and abs(sum(c) - 100) < 1e-6 for c in res["cpu"])
    else:                # the official + 0.1 s in the denominator: shares sum to less than 100
        assert all(min(c) >= 0 and sum(c) < 100 for c in res["cpu"])
    periods = [b - a for a, b in itertools.pairwise(t)]
    assert min(periods) >= 0.02 - 1e-3  # read, then sleep the interval: never faster than nominal


def test_official_cpu_split_by_hand():
    from types import SimpleNamespace as T
    # deltas user 0.1, system 0.05, idle 0.05 s: 100 * d / (0.2 + 0.1)
    got = official_cpu_split(T(user=10.0, system=5.0, idle=100.0), T(user=10.1, system=5.05, idle=100.05))
    assert got == pytest.approx([100 / 3, 50 / 3, 50 / 3])
    # no CPU time passed: all shares 0, so load_json.py's 100 - idle reads it as 100 % used
    assert official_cpu_split(T(user=1.0, system=1.0, idle=1.0), T(user=1.0, system=1.0, idle=1.0)) == [0, 0, 0]


def test_both_timings_side_by_side_sleep_at_least_the_interval():
    """One process per timing over the same window; each poll reads, then sleeps the interval, so no
    period is shorter than it (the official loop's plain sleep included)."""
    sset = SamplerSet(resolve_source("cpu"), interval=0.1).start()
    sset.attach(os.getpid())
    time.sleep(1.5)
    res = sset.stop()
    assert set(res) == {"official", "lean"}
    for mode, r in res.items():
        assert r["sampler"] == mode and len(r["memory"]) >= 5
        periods = [b - a for a, b in itertools.pairwise(r["timestamps"])]
        assert min(periods) >= 0.1 - 1e-3, mode
        assert statistics.median(r["memory"]) > 10  # this interpreter's own RSS, in MiB
    with pytest.raises(ValueError, match="distinct"):
        SamplerSet(resolve_source("cpu"), modes=("lean", "lean"))
    with pytest.raises(ValueError, match="sampler mode must be one of lean, official"):
        Sampler(resolve_source("cpu"), mode="fast")


def test_sampler_rejects_bad_interval_and_source():
    with pytest.raises(ValueError, match="interval must be > 0"):
        Sampler(SourceSpec("rss-tree"), interval=0)
    with pytest.raises(SamplerError, match="unknown memory source 'tpu'"):
        Sampler(SourceSpec("tpu")).start()


def test_resolve_source_cpu_and_container():
    assert resolve_source("cpu").kind == "rss-tree"
    spec = resolve_source("cpu", container="team")
    assert spec.kind == "container" and spec.container == "team" and spec.device.startswith("CPU: ")
    with pytest.raises(ValueError, match="memory must be auto, gpu or cpu"):
        resolve_source("tpu")


def test_without_nvidia_driver_auto_falls_back_and_gpu_fails_clearly():
    desc, reason = nvml_probe(0)
    if desc is not None:
        pytest.skip(f"an NVIDIA GPU is present: {desc}")
    assert reason  # says why
    msgs = []
    spec = resolve_source("auto", log=msgs.append)
    assert spec.kind == "rss-tree" and spec.device.startswith("CPU: ")
    assert len(msgs) == 1 and reason in msgs[0] and "falling back" in msgs[0]
    with pytest.raises(SamplerError, match="GPU memory sampling requested but unavailable"):
        resolve_source("gpu")


GPU_GROW_MIB = 1024
# On the GPU: create the CUDA context, say 'base', wait; allocate GPU_GROW_MIB MiB (float32), say 'grown',
# wait; exit. The context is there in both phases, so the difference is the allocation alone.
GPU_CHILD = f"""
import time, torch
torch.zeros(1, device='cuda'); torch.cuda.synchronize()
print('base', flush=True); time.sleep(2.0)
x = torch.ones({GPU_GROW_MIB} * 2**18, device='cuda'); torch.cuda.synchronize()
print('grown', flush=True); time.sleep(2.0)
"""


@pytest.mark.parametrize("mode", ["lean", "official"])
def test_nvml_sampler_on_a_gpu_sees_a_known_allocation(mode):
    """Whole-device used memory: what NVML reports at rest, and a child's 1 GiB allocation on top."""
    desc, reason = nvml_probe(0)
    if desc is None:
        pytest.skip(f"no GPU: {reason}")
    import pynvml
    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        # the official wrapper's total - free comes to used / 2**20 (its free is total - used)
        at_rest = pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
    finally:
        pynvml.nvmlShutdown()
    s = Sampler(resolve_source("gpu"), 0.05, mode).start()
    time.sleep(0.3)
    proc = subprocess.Popen([sys.executable, "-c", GPU_CHILD], stdout=subprocess.PIPE, text=True)
    marks = {}
    for line in proc.stdout:
        marks[line.strip()] = time.time()
    proc.wait()
    res = s.stop()
    assert proc.returncode == 0 and res["source"] == "nvml" and res["sampler"] == mode
    t, m = res["timestamps"], res["memory"]
    assert abs(m[0] - at_rest) < 64  # before the child: what NVML said at rest (other users aside)
    base = [v for tt, v in zip(t, m) if marks["base"] + 0.3 < tt < marks["base"] + 1.8]
    grown = [v for tt, v in zip(t, m) if marks["grown"] + 0.3 < tt < marks["grown"] + 1.8]
    assert len(base) >= 5 and len(grown) >= 5
    # the caching allocator rounds up to 2 MiB blocks: the rise is the allocation within a few MiB
    assert statistics.median(grown) - statistics.median(base) == pytest.approx(GPU_GROW_MIB, abs=8)


@pytest.mark.parametrize("text, mib", [("512MiB / 28GiB", 512.0), ("1.5GiB / 28GiB", 1536.0),
                                       ("2048KiB / 1GiB", 2.0), ("1GB / 2GB", 1e9 / 2**20)])
def test_parse_docker_mem(text, mib):
    assert parse_docker_mem(text) == pytest.approx(mib)


def test_parse_docker_mem_rejects_garbage():
    with pytest.raises(ValueError, match="cannot parse docker memory usage"):
        parse_docker_mem("--")


@pytest.mark.parametrize("mode", ["container-rss", "container-stats"])
def test_container_memory_of_a_real_container(mode):
    """Docker mode's CPU fallback on a real container holding a known 96 MiB: through the process tree
    the engine reports, and through `docker stats` (used where that tree is not visible)."""
    import uuid

    from benchmarks.flare.harness import docker_engine_available
    from benchmarks.flare.sampler import _ContainerSource
    ok, why = docker_engine_available()
    if not ok:
        pytest.skip(f"no Docker engine: {why}")
    base = "flare-base:bookworm"
    if subprocess.run(["docker", "image", "inspect", base], capture_output=True).returncode != 0:
        pytest.skip(f"no local {base} image (docker/base_image.sh builds it)")
    name = f"flaresampler{uuid.uuid4().hex[:8]}"
    source = _ContainerSource(name)
    assert source.read() == 0.0                       # no container yet
    subprocess.run(["docker", "container", "run", "-d", "--rm", "--network", "none", "--name", name, base,
                    "python3", "-c", "import time; b = bytearray(96 * 2**20); time.sleep(60)"],
                   check=True, capture_output=True)
    try:
        if mode == "container-stats":
            source._mode = mode                       # as when the engine's pids are not visible here
        deadline, mib = time.time() + 20, 0.0
        while time.time() < deadline and mib < 96:
            mib = source.read()
            time.sleep(0.2)
        assert source.name == mode
        assert 96 <= mib < 400
    finally:
        subprocess.run(["docker", "container", "rm", "-f", name], capture_output=True)


def test_sampler_period_measure_and_query_costs():
    """benchmarks.flare.sampler_period: the function the GPU check calls, on the CPU fallback here."""
    from benchmarks.flare.sampler_period import markdown, measure, query_costs
    r = measure("official", 1.5, memory="cpu")
    assert r["mode"] == "official" and r["source"] == "rss-tree" and r["samples"] >= 5
    assert 0.1 <= r["period_median_s"] <= r["period_max_s"]         # read, then sleep 0.1 s
    assert r["auc_per_s_at_1000_mib"] == pytest.approx(100 / r["period_mean_s"])
    costs = query_costs(20, memory="cpu")
    assert set(costs) == {"lean", "official"} and "3 Manager list appends" in costs["official"]
    assert all(v > 0 for part in costs.values() for v in part.values())
    r["busy"] = 0
    from benchmarks.common import run_metadata
    text = markdown([r], costs, run_metadata("python -m benchmarks.flare.sampler_period"))
    assert text.splitlines()[2] == "Command: `python -m benchmarks.flare.sampler_period`  "
    assert "| official | 0 | rss-tree |" in text
