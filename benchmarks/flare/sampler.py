"""Memory sampler in a separate process, as the organisers' Efficiency.py runs it.

A child process polls, then sleeps `interval` seconds (0.1 s by default: read, then sleep, so the real
period is the nominal one plus the time the reads take), from `start()` (before the run) until
`stop()` (after it). Two timings (docs/efficiency.md compares them sample by sample):

  lean      (ours) one memory read, psutil.cpu_times(), psutil.virtual_memory(), then wait `interval`.
  official  what the official loop does per sample: the GPU query of pynvml's smi wrapper
            (`DeviceQuery("memory.free, memory.total")`: device count, then PCI info and memory info
            of EVERY GPU), the CPU split with its `+ 0.1` in the denominator, used RAM, three appends
            to multiprocessing.Manager lists (one round trip each to the manager process), then
            time.sleep(interval). Its period is longer, so its plain-sum AUC is the smaller one: the
            number to compare with what the organisers will compute.

Each poll records, in both modes:
  - a timestamp (time.time(), seconds, taken at the start of the poll),
  - memory in MiB from the source,
  - the CPU split [user %, system %, idle %] since the previous poll (`cpu_list`) and used RAM (MiB,
    `RAM_list`), system-wide, as the official JSON. lean: exact shares of user + system + idle;
    official: 100 * delta / (sum of deltas + 0.1), the official formula (shares then sum to less
    than 100, by a lot on few cores).

Memory sources:
  nvml            whole-device used framebuffer memory of GPU `index` via nvidia-ml-py (pynvml):
                  used / 2**20 MiB (a float). The official wrapper returns total / 2**20 and
                  free = total / 2**20 - used / 2**20, and the loop records total - free: the same
                  number.
  rss-tree        CPU fallback, direct mode: resident memory (RSS) of the run's process and all its
                  descendants, summed (MiB). 0 before the process is attached and after it ends.
  container-rss   CPU fallback, docker mode: RSS of the container's process tree, found through
                  `docker inspect` (only where the engine's processes are visible from here).
  container-stats CPU fallback, docker mode, where they are not: `docker stats` memory usage (slow:
                  each read takes about a second, so the samples are sparse).
In official mode with a CPU source the GPU query is skipped (there is no GPU): the CPU, RAM and
Manager parts of the official loop are still made.

When no NVIDIA driver is present, `resolve_source("auto", ...)` says so and falls back to the CPU
source, so every part of the harness runs and is tested without a GPU.
"""
from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.common import cpu_description

MIB = 1024 * 1024
SAMPLER_MODES = ("lean", "official")
# Denominator offset of the official CPU split (seconds of CPU time added to the sum of the deltas).
OFFICIAL_CPU_OFFSET_S = 0.1


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
        # The official number: pynvml.smi's fb_memory_usage total - free, i.e. used / 2**20 (float MiB).
        return self._nv.nvmlDeviceGetMemoryInfo(self._h).used / MIB

    def close(self) -> None:
        self._nv.nvmlShutdown()


class _NvmlAllGpusSource(_NvmlSource):
    """Official timing: per read, the NVML calls pynvml.smi's DeviceQuery("memory.free, memory.total")
    makes (device count; PCI info and memory info of every GPU), keeping GPU `index`'s used memory."""
    name = "nvml"

    def __init__(self, index: int):
        super().__init__(index)
        self._index = index
        self._handles = [self._nv.nvmlDeviceGetHandleByIndex(i) for i in range(self._nv.nvmlDeviceGetCount())]

    def read(self) -> float:
        used = 0.0
        for i in range(self._nv.nvmlDeviceGetCount()):
            self._nv.nvmlDeviceGetPciInfo(self._handles[i])
            info = self._nv.nvmlDeviceGetMemoryInfo(self._handles[i])
            if i == self._index:
                used = info.used / MIB
        return used


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


_SIZE_RE = re.compile(r"^\s*([\d.]+)\s*([KMGT]?i?B)", re.IGNORECASE)
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
                               check=False, capture_output=True, text=True, timeout=30)
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


def _make_source(spec: SourceSpec, pid_value, mode: str = "lean"):
    if spec.kind == "nvml":
        return _NvmlAllGpusSource(spec.gpu_index) if mode == "official" else _NvmlSource(spec.gpu_index)
    if spec.kind == "rss-tree":
        return _TreeSource(pid_value)
    if spec.kind == "container":
        return _ContainerSource(spec.container)
    raise ValueError(f"unknown memory source {spec.kind!r}")


# ------------------------------------------------------------------------------------ sampler process

def _cpu_split(before, now) -> list[float]:
    # lean: shares of user + system + idle only, as the official cpu_list (other states are not counted).
    du, ds, di = now.user - before.user, now.system - before.system, now.idle - before.idle
    total = du + ds + di
    if total <= 0:
        return [0.0, 0.0, 100.0]
    return [100.0 * du / total, 100.0 * ds / total, 100.0 * di / total]


def official_cpu_split(before, now) -> list[float]:
    """The official loop's split: 100 * delta / (sum of the user, system, idle deltas + 0.1 s)."""
    d = [now.user - before.user, now.system - before.system, now.idle - before.idle]
    total = sum(d) + OFFICIAL_CPU_OFFSET_S
    return [100.0 * x / total for x in d]


def _poll_loop(source, interval: float, stop_event, mode: str, ts, mem, cpu, ram, shared=None) -> None:
    """Append one sample per poll to ts/mem/cpu/ram until stop_event is set. `shared` (official mode):
    three Manager list proxies, owned by the parent as in the official script."""
    import psutil
    cpu_before = psutil.cpu_times()
    if mode == "official":
        while not stop_event.is_set():
            t = time.time()
            m = source.read()
            now = psutil.cpu_times()
            c = official_cpu_split(cpu_before, now)
            cpu_before = now
            r = psutil.virtual_memory().used / MIB
            # Every append is a round trip to the manager process: part of the official period.
            shared[0].append(m)
            shared[1].append(r)
            shared[2].append(c)
            ts.append(t)
            mem.append(m)
            cpu.append(c)
            ram.append(r)
            time.sleep(interval)  # a plain sleep, as the official loop (stop is seen after it)
        return
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


def _sampler_main(spec: SourceSpec, interval: float, pid_value, stop_event, out_queue,
                  mode: str = "lean", shared=None) -> None:
    """Body of the sampler process: poll until stop_event, then send everything back in one message."""
    try:
        source = _make_source(spec, pid_value, mode)
    except Exception as e:  # noqa: BLE001 -- any failure goes back to the parent as a message
        out_queue.put({"error": f"{type(e).__name__}: {e}"})
        return
    out_queue.put({"ready": True})
    ts: list[float] = []
    mem: list[float] = []
    cpu: list[list[float]] = []
    ram: list[float] = []
    err = ""
    try:
        _poll_loop(source, interval, stop_event, mode, ts, mem, cpu, ram, shared)
    except Exception as e:  # noqa: BLE001 -- keep the samples taken so far, report the error
        err = f"{type(e).__name__}: {e}"
    finally:
        source.close()
    out_queue.put({"timestamps": ts, "memory": mem, "cpu": cpu, "ram": ram, "source": source.name,
                   "error": err})


class Sampler:
    """Start before the run, `attach(pid)` once it is started (rss-tree source), `stop()` after it.

    mode: lean | official (module docstring). stop() returns {timestamps (s, time.time()), memory (MiB),
    cpu, ram, source, device, interval, sampler}.
    """

    def __init__(self, spec: SourceSpec, interval: float = 0.1, mode: str = "lean"):
        if interval <= 0:
            raise ValueError(f"interval must be > 0 s, got {interval}")
        if mode not in SAMPLER_MODES:
            raise ValueError(f"sampler mode must be one of {', '.join(SAMPLER_MODES)}, got {mode!r}")
        self.spec = spec
        self.interval = interval
        self.mode = mode
        self._ctx = mp.get_context("spawn")  # no fork of a parent that may hold CUDA or threads
        self._pid = self._ctx.Value("i", 0)
        self._stop = self._ctx.Event()
        self._q = self._ctx.Queue()
        self._proc = None
        self._manager = None
        self._shared = None

    def start(self, timeout: float = 60.0) -> Sampler:
        shared = None
        if self.mode == "official":
            self._manager = self._ctx.Manager()  # the official script's Manager, in the parent as there
            # Held here: the manager drops a list as soon as the parent's last proxy to it is gone.
            self._shared = shared = [self._manager.list() for _ in range(3)]
        self._proc = self._ctx.Process(target=_sampler_main, name="memory-sampler", daemon=True,
                                       args=(self.spec, self.interval, self._pid, self._stop, self._q,
                                             self.mode, shared))
        self._proc.start()
        try:
            msg = self._q.get(timeout=timeout)
        except queue_mod.Empty:
            self._kill()
            raise SamplerError(f"the sampler process did not start within {timeout:.0f} s") from None
        if "error" in msg:
            self._proc.join(5)
            self._shutdown_manager()
            raise SamplerError(f"the {self.spec.kind} sampler ({self.mode}) could not start: {msg['error']}")
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
        self._shutdown_manager()
        if res.get("error"):
            print(f"[sampler] warning: sampling ended early: {res['error']}", file=sys.stderr)
        res.update(device=self.spec.device, interval=self.interval, sampler=self.mode)
        return res

    def _shutdown_manager(self) -> None:
        if self._manager is not None:
            self._shared = None
            self._manager.shutdown()
            self._manager = None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._proc = None
        self._shutdown_manager()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._stop.set()
            self._kill()


class SamplerSet:
    """Several samplers (one process per mode) over the same run, started and stopped together, so that
    one run yields a trace for each timing. stop() returns {mode: Sampler.stop() result}."""

    def __init__(self, spec: SourceSpec, interval: float = 0.1, modes: Sequence[str] = ("official", "lean")):
        if not modes or len(set(modes)) != len(modes):
            raise ValueError(f"sampler modes must be distinct and at least one, got {list(modes)}")
        self.samplers = [Sampler(spec, interval, m) for m in modes]

    def start(self, timeout: float = 60.0) -> SamplerSet:
        started = []
        try:
            for s in self.samplers:
                started.append(s.start(timeout))
        except SamplerError:
            for s in started:
                s.__exit__(None, None, None)
            raise
        return self

    def attach(self, pid: int) -> None:
        for s in self.samplers:
            s.attach(pid)

    def stop(self, timeout: float = 60.0) -> dict[str, dict]:
        for s in self.samplers:       # all stop together, then each hands back its samples
            s._stop.set()
        return {s.mode: s.stop(timeout) for s in self.samplers}
