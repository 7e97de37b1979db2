"""Memory sampler in a separate process, as the organisers' resource_eval.py runs it.

A child process polls one memory source, then sleeps `interval` seconds (0.1 s by default: read,
then sleep, so the real period is a bit longer than the nominal one, exactly as in the official loop),
from `start()` (before the run) until `stop()` (after it). Each poll records:
  - a timestamp (time.time(), seconds),
  - memory in MiB from the source,
  - system-wide CPU split [user %, system %, idle %] since the previous poll and used RAM (MiB), as
    the official JSON's `cpu_list` and `RAM_list` ("for debug purpose").

Memory sources:
  nvml            whole-device used framebuffer memory of GPU `index` via nvidia-ml-py (pynvml):
                  int(total / 2**20) - int(free / 2**20) MiB, the number nvidia-smi shows and the
                  organisers record (they read total - free through pynvml's smi wrapper).
  rss-tree        CPU fallback, direct mode: resident memory (RSS) of the run's process and all its
                  descendants, summed (MiB). 0 before the process is attached and after it ends.
  container-rss   CPU fallback, docker mode: RSS of the container's process tree, found through
                  `docker inspect` (only where the engine's processes are visible from here).
  container-stats CPU fallback, docker mode, where they are not: `docker stats` memory usage (slow:
                  each read takes about a second, so the samples are sparse).

When no NVIDIA driver is present, `resolve_source("auto", ...)` says so and falls back to the CPU
source, so every part of the harness runs and is tested without a GPU.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import platform
import queue as queue_mod
import re
import subprocess
import sys
import time
from dataclasses import dataclass

MIB = 1024 * 1024


class SamplerError(RuntimeError):
    """The sampler could not start or did not return its samples."""


# --------------------------------------------------------------------------------------------- probes

def nvml_probe(index: int = 0) -> tuple[str | None, str]:
    """(description, "") for GPU `index` if NVML works, else (None, reason)."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return None, f"NVML could not start ({e}); no NVIDIA driver on this machine?"
    try:
        count = pynvml.nvmlDeviceGetCount()
        if index >= count:
            return None, f"GPU index {index} requested but NVML sees {count} GPU(s)"
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else name
        total = pynvml.nvmlDeviceGetMemoryInfo(h).total // MIB
        drv = pynvml.nvmlSystemGetDriverVersion()
        drv = drv.decode() if isinstance(drv, bytes) else drv
        return f"{name} (GPU {index}, {total} MiB, driver {drv})", ""
    except pynvml.NVMLError as e:
        return None, f"NVML error for GPU {index}: {e}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def cpu_description() -> str:
    """'CPU: <model> (<n> cores available)' for this machine."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 0
    return f"CPU: {model} ({n} cores available)"


@dataclass(frozen=True)
class SourceSpec:
    """What the sampler process should read (picklable; the source itself is built in the child)."""
    kind: str                 # nvml | rss-tree | container
    gpu_index: int = 0
    container: str = ""       # container name (docker mode)
    device: str = ""          # human-readable device the numbers come from


def resolve_source(memory: str = "auto", gpu_index: int = 0, container: str = "",
                   log=print) -> SourceSpec:
    """Choose the memory source. memory: auto | gpu | cpu.

    auto: NVML when it works, else (with a message saying why) the CPU fallback; gpu: NVML or a
    SamplerError naming the reason; cpu: the CPU fallback (container memory when `container` is given).
    """
    if memory not in ("auto", "gpu", "cpu"):
        raise ValueError(f"memory must be auto, gpu or cpu, got {memory!r}")
    cpu_kind = "container" if container else "rss-tree"
    if memory in ("auto", "gpu"):
        desc, reason = nvml_probe(gpu_index)
        if desc is not None:
            return SourceSpec("nvml", gpu_index, container, desc)
        if memory == "gpu":
            raise SamplerError(f"GPU memory sampling requested but unavailable: {reason}")
        what = "the container's memory" if container else "resident memory of the run's process tree"
        log(f"[sampler] {reason}: no GPU memory to sample; falling back to {what} (CPU mode).")
    return SourceSpec(cpu_kind, gpu_index, container, cpu_description())


# -------------------------------------------------------------------------------------------- sources

class _NvmlSource:
    name = "nvml"

    def __init__(self, index: int):
        import pynvml
        self._nv = pynvml
        pynvml.nvmlInit()
        self._h = pynvml.nvmlDeviceGetHandleByIndex(index)

    def read(self) -> float:
        info = self._nv.nvmlDeviceGetMemoryInfo(self._h)
        # MiB truncated separately, as pynvml.smi reports fb_memory_usage total and free.
        return float(int(info.total / MIB) - int(info.free / MIB))

    def close(self) -> None:
        self._nv.nvmlShutdown()


def tree_rss_mib(pid: int) -> float:
    """Summed RSS (MiB) of process `pid` and all its descendants; 0.0 if it does not exist."""
    import psutil
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # ended between listing and reading
            pass
    return total / MIB


class _TreeSource:
    name = "rss-tree"

    def __init__(self, pid_value):
        self._pid = pid_value

    def read(self) -> float:
        pid = self._pid.value
        return tree_rss_mib(pid) if pid > 0 else 0.0

    def close(self) -> None:
        pass


_SIZE_RE = re.compile(r"^\s*([\d.]+)\s*([KMGT]?i?B)", re.I)
_UNITS = {"b": 1 / MIB, "kb": 1e3 / MIB, "kib": 1 / 1024, "mb": 1e6 / MIB, "mib": 1.0,
          "gb": 1e9 / MIB, "gib": 1024.0, "tb": 1e12 / MIB, "tib": 1024.0 ** 2}


def parse_docker_mem(text: str) -> float:
    """MiB from `docker stats` MemUsage text such as '512.3MiB / 28GiB'."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"cannot parse docker memory usage {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


class _ContainerSource:
    """Memory of a running container (0 before it exists and after it is gone)."""

    def __init__(self, container: str):
        self._name = container
        self._pid = 0
        self._next_lookup = 0.0
        self._mode = "container-rss"

    @property
    def name(self) -> str:
        return self._mode

    def _lookup(self) -> None:
        r = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}} {{.Id}}", self._name],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            return
        pid_s, cid = (r.stdout.split() + ["", ""])[:2]
        pid = int(pid_s) if pid_s.isdigit() else 0
        if pid <= 0:
            return
        # The pid is the engine's view; trust it only if that process is in this container's cgroup.
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                visible = cid[:12] in f.read()
        except OSError:
            visible = False
        if visible:
            self._pid = pid
        else:
            self._mode = "container-stats"

    def read(self) -> float:
        if self._mode == "container-stats":
            r = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", self._name],
                               capture_output=True, text=True, timeout=30)
            return parse_docker_mem(r.stdout) if r.returncode == 0 and r.stdout.strip() else 0.0
        if self._pid == 0:
            now = time.monotonic()
            if now >= self._next_lookup:
                self._next_lookup = now + 0.3  # `docker inspect` takes tens of ms: not every poll
                self._lookup()
            if self._pid == 0:
                return 0.0
        return tree_rss_mib(self._pid)

    def close(self) -> None:
        pass


def _make_source(spec: SourceSpec, pid_value):
    if spec.kind == "nvml":
        return _NvmlSource(spec.gpu_index)
    if spec.kind == "rss-tree":
        return _TreeSource(pid_value)
    if spec.kind == "container":
        return _ContainerSource(spec.container)
    raise ValueError(f"unknown memory source {spec.kind!r}")


# ------------------------------------------------------------------------------------ sampler process

def _cpu_split(before, now) -> list[float]:
    # Shares of user + system + idle only, as the official cpu_list (other states are not counted).
    du, ds, di = now.user - before.user, now.system - before.system, now.idle - before.idle
    total = du + ds + di
    if total <= 0:
        return [0.0, 0.0, 100.0]
    return [100.0 * du / total, 100.0 * ds / total, 100.0 * di / total]


def _sampler_main(spec: SourceSpec, interval: float, pid_value, stop_event, out_queue) -> None:
    """Body of the sampler process: poll until stop_event, then send everything back in one message."""
    import psutil
    try:
        source = _make_source(spec, pid_value)
    except Exception as e:  # report, don't die silently
        out_queue.put({"error": f"{type(e).__name__}: {e}"})
        return
    out_queue.put({"ready": True})
    ts: list[float] = []
    mem: list[float] = []
    cpu: list[list[float]] = []
    ram: list[float] = []
    cpu_before = psutil.cpu_times()
    err = ""
    try:
        while not stop_event.is_set():
            t = time.time()
            m = source.read()
            now = psutil.cpu_times()
            cpu.append(_cpu_split(cpu_before, now))
            cpu_before = now
            ram.append(psutil.virtual_memory().used / MIB)
            ts.append(t)
            mem.append(m)
            stop_event.wait(interval)
    except Exception as e:
        err = f"{type(e).__name__}: {e}"
    finally:
        source.close()
    out_queue.put({"timestamps": ts, "memory": mem, "cpu": cpu, "ram": ram, "source": source.name,
                   "error": err})


class Sampler:
    """Start before the run, `attach(pid)` once it is started (rss-tree source), `stop()` after it.

    stop() returns {timestamps (s, time.time()), memory (MiB), cpu, ram, source, device, interval}.
    """

    def __init__(self, spec: SourceSpec, interval: float = 0.1):
        if interval <= 0:
            raise ValueError(f"interval must be > 0 s, got {interval}")
        self.spec = spec
        self.interval = interval
        self._ctx = mp.get_context("spawn")  # no fork of a parent that may hold CUDA or threads
        self._pid = self._ctx.Value("i", 0)
        self._stop = self._ctx.Event()
        self._q = self._ctx.Queue()
        self._proc = None

    def start(self, timeout: float = 60.0) -> "Sampler":
        self._proc = self._ctx.Process(target=_sampler_main, name="memory-sampler", daemon=True,
                                       args=(self.spec, self.interval, self._pid, self._stop, self._q))
        self._proc.start()
        try:
            msg = self._q.get(timeout=timeout)
        except queue_mod.Empty:
            self._kill()
            raise SamplerError(f"the sampler process did not start within {timeout:.0f} s") from None
        if "error" in msg:
            self._proc.join(5)
            raise SamplerError(f"the {self.spec.kind} sampler could not start: {msg['error']}")
        return self

    def attach(self, pid: int) -> None:
        """Tell an rss-tree sampler which process tree to measure (0 = none)."""
        self._pid.value = int(pid)

    def stop(self, timeout: float = 60.0) -> dict:
        if self._proc is None:
            raise SamplerError("stop() before start()")
        self._stop.set()
        try:
            res = self._q.get(timeout=timeout)
        except queue_mod.Empty:
            self._kill()
            raise SamplerError("the sampler process returned no samples") from None
        self._proc.join(10)
        self._proc = None
        if res.get("error"):
            print(f"[sampler] warning: sampling ended early: {res['error']}", file=sys.stderr)
        res.update(device=self.spec.device, interval=self.interval)
        return res

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._proc = None

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._stop.set()
            self._kill()
