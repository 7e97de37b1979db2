"""In-process profile of one case: seconds and peak memory per stage of our predictor.

    python -m benchmarks.flare.profile_case CASE_0000.nii.gz [-m MODEL_DIR] [--device auto|cuda|cpu] [--tta]
                                      [--step-size 0.5] [--json OUT.json] [--md OUT.md]

Stages: imports, model_load (start-up), then read, preprocess, network, export, write. Per stage:
wall seconds (CUDA synchronised at the boundaries), torch's peak allocated CUDA memory within the
stage (torch.cuda.max_memory_allocated after a reset at its start; what the caching allocator handed
out, below what NVML shows: the allocator's reserve and the CUDA context come on top) and the peak
resident memory of this process within the stage (a 5 ms polling thread). On a GPU the whole device's
memory is also sampled every 0.1 s with NVML (benchmarks.flare.sampler, as the organisers do) from model load
to the end: its maximum, AUC and tolerance-adjusted AUC (only memory above 4096 MiB counted) are
reported. For the organisers' whole-run numbers (imports and process start included), use
benchmarks.flare.harness. Without SimpleITK (the GPU check's machine), or with --nibabel, files are read
and written with nibabel.
"""
from __future__ import annotations

from functools import partial

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from inference.files.atomic import write_text

MIB = 2**20


class _RssPeak:
    """Polls this process's RSS every `period` s; `begin()` starts a new window, `peak()` reads it (MiB)."""

    def __init__(self, period: float = 0.005):
        import psutil
        self._proc = psutil.Process()
        self._period = period
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._proc.memory_info().rss
            with self._lock:
                self._peak = max(self._peak, rss)
            self._stop.wait(self._period)

    def begin(self) -> None:
        with self._lock:
            self._peak = self._proc.memory_info().rss

    def peak(self) -> float:
        rss = self._proc.memory_info().rss
        with self._lock:
            self._peak = max(self._peak, rss)
            return self._peak / MIB

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)


def make_profiling_timer(cuda: bool, rss: _RssPeak):
    """A StageTimer (inference.timings) that also records per-stage peak memory in `.peaks`."""
    import torch

    from inference.timings import StageTimer

    class ProfilingTimer(StageTimer):
        def __init__(self):
            super().__init__(sync=torch.cuda.synchronize if cuda else None)
            self.peaks: dict[str, dict[str, float]] = {}

        @contextmanager
        def stage(self, name: str):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            rss.begin()
            with super().stage(name):
                yield
            p = self.peaks.setdefault(name, {})
            p["rss_peak_mib"] = max(p.get("rss_peak_mib", 0.0), rss.peak())
            if cuda:
                p["torch_peak_allocated_mib"] = max(p.get("torch_peak_allocated_mib", 0.0),
                                                    torch.cuda.max_memory_allocated() / MIB)

    return ProfilingTimer()


def _case_io(image: Path, model, nibabel: bool = False):
    """(case id, read() -> (data, spacing, reference, direction), write(labels, reference, path)) for `image`:
    the predictor's SimpleITK I/O, or nibabel (`nibabel`, or where SimpleITK is not installed)."""
    from .nifti_io import simpleitk_importable
    suffix = "_0000" + model.file_ending
    if not image.name.endswith(suffix):
        raise FileNotFoundError(f"{image}: not a <case>{suffix} file")
    case_id = image.name[: -len(suffix)]
    if nibabel or not simpleitk_importable():
        from .nifti_io import itk_direction, read_volume, write_labels

        def read_nibabel():
            data, spacing, reference = read_volume(image)
            return data, spacing, reference, itk_direction(reference)
        return case_id, read_nibabel, write_labels
    from inference.files.cases import Case
    from inference.files.reading import read_case
    from inference.files.writing import write_segmentation
    from inference.memory.cost import check_case

    def read():
        volume = read_case(Case(case_id, [image]), partial(check_case, model=model))
        return volume.data, volume.spacing, volume.reference, volume.reference.GetDirection()
    return case_id, read, write_segmentation


def gpu_memory_summary(samples: dict, tolerance_mib: float = 4096.0) -> dict:
    """Max, AUC and tolerance-adjusted AUC of NVML samples, computed as the organisers do."""
    from .summary import official_auc, official_max, tolerant_auc
    memory = samples["memory"]
    return {"source": samples["source"], "samples": len(memory), "max_mib": official_max(memory),
            "auc_mib_s": official_auc(memory), "tolerance_mib": tolerance_mib,
            "auc_above_tolerance_mib_s": tolerant_auc(memory, tolerance_mib)}


def profile(image: Path, model_dir: Path | None, device: str = "auto", tta: bool = False,
            step_size: float = 0.5, out_dir: Path | None = None, gpu_memory_budget: float | None = None,
            sample_gpu: bool = True, nibabel: bool = False) -> dict:
    """Profile one case in this process; returns {device, stages: {name: {seconds, ...}}, ...}.

    `gpu_memory_budget` (MiB) applies the predictor's budget (inference.memory.gpu_plan) on CUDA.
    """
    rss = _RssPeak()
    t0 = time.perf_counter()
    rss.begin()
    import torch

    from inference.api import DEFAULT_MODEL_DIR, segment_array
    from inference.device import resolve_device
    from inference.memory.gpu_budget import GpuBudget
    from inference.loading import load_model
    stages: dict[str, dict] = {"imports": {"seconds": time.perf_counter() - t0, "rss_peak_mib": rss.peak()}}
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    sampler = None
    if cuda and sample_gpu:
        from .sampler import Sampler, resolve_source
        sampler = Sampler(resolve_source("gpu", torch.cuda.current_device()), 0.1).start()
    rss.begin()
    t1 = time.perf_counter()
    model = load_model(model_dir or DEFAULT_MODEL_DIR, None, "checkpoint_final.pth", dev)
    if cuda:
        torch.cuda.synchronize()
    stages["model_load"] = {"seconds": time.perf_counter() - t1, "rss_peak_mib": rss.peak()}
    if cuda:
        stages["model_load"]["torch_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / MIB
    case_id, read, write = _case_io(image, model, nibabel)
    budget = GpuBudget(gpu_memory_budget, dev) if gpu_memory_budget else None
    timer = make_profiling_timer(cuda, rss)
    with timer.stage("read"):
        data, spacing, reference, direction = read()
    labels = segment_array(data, spacing, model, tta=tta, step_size=step_size, timer=timer, budget=budget,
                           source=str(image), direction=direction)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        target = (out_dir or Path(tmp)) / f"{case_id}.nii.gz"
        with timer.stage("write"):
            write(labels, reference, target)
    rss.close()
    gpu_memory = gpu_memory_summary(sampler.stop()) if sampler else None
    for name, sec in timer.seconds.items():
        stages[name] = {"seconds": sec, **timer.peaks.get(name, {})}
    from benchmarks.common import cpu_description

    from .sampler import nvml_probe
    dev_desc = (nvml_probe(torch.cuda.current_device())[0] or torch.cuda.get_device_name()) if cuda \
        else cpu_description()
    # image_size: (x, y, z) as in Table 6; data is (C, Z, Y, X)
    return {"device": dev_desc, "torch_device": str(dev), "case": case_id,
            "image_size": list(data.shape[1:][::-1]), "tta": tta, "step_size": step_size,
            "torch_threads": torch.get_num_threads(), "model": str(model.model_dir), "stages": stages,
            "gpu_memory_budget_mib": gpu_memory_budget, "gpu_memory": gpu_memory,
            "total_seconds": sum(s["seconds"] for s in stages.values())}


def markdown(res: dict) -> str:
    cuda = any("torch_peak_allocated_mib" in s for s in res["stages"].values())
    lines = [f"### Profile of {res['case']} ({', '.join(map(str, res['image_size']))}) on {res['device']}", "",
             (f"Model {res['model']}; TTA {'on' if res['tta'] else 'off'}; step {res['step_size']}; "
              f"torch threads {res['torch_threads']}."), "",
             "| Stage | Seconds | " + ("Torch peak allocated (MB) | " if cuda else "") + "Peak RSS (MB) |",
             "|---|---:|" + ("---:|" if cuda else "") + "---:|"]
    for name, s in res["stages"].items():
        gpu = f" {s['torch_peak_allocated_mib']:,.0f} |" if "torch_peak_allocated_mib" in s else (" - |" if cuda else "")
        lines.append(f"| {name} | {s['seconds']:.3f} |{gpu} {s.get('rss_peak_mib', 0):,.0f} |")
    lines.append(f"| **total** | {res['total_seconds']:.3f} |" + (" |" if cuda else "") + " |")
    g = res.get("gpu_memory")
    if g:
        lines += ["", (f"Whole-device GPU memory (NVML every 0.1 s, model load to end, {g['samples']} samples): "
                       f"max {g['max_mib']:,.0f} MiB, AUC {g['auc_mib_s']:,.0f} MiB·s, above "
                       f"{g['tolerance_mib']:,.0f} MiB {g['auc_above_tolerance_mib_s']:,.0f} MiB·s; budget "
                       f"{res.get('gpu_memory_budget_mib') or 'none'}.")]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flare.profile_case", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("image", type=Path, help="<case>_0000.nii.gz")
    p.add_argument("-m", "--model", type=Path, help="model folder (default: weights/)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--step-size", type=float, default=0.5)
    p.add_argument("--json", type=Path, help="write the profile as JSON")
    p.add_argument("--md", type=Path, help="write the table as markdown")
    p.add_argument("--nibabel", action="store_true",
                   help="read and write with nibabel, as on the GPU machine (default: SimpleITK where installed)")
    p.add_argument("--gpu-memory-budget", type=float, default=None, metavar="MIB",
                   help="the predictor's GPU-memory budget (default: none; the CLI's default is 4096)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if not a.image.is_file():
        print(f"error: {a.image}: no such file", file=sys.stderr)
        return 2
    # The package root only: cheap, and not counted in the profile's "imports".
    from inference import InferenceError
    try:
        res = profile(a.image, a.model, a.device, a.tta, a.step_size, gpu_memory_budget=a.gpu_memory_budget,
                      nibabel=a.nibabel)
    except (FileNotFoundError, RuntimeError, InferenceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = markdown(res)
    print(text)
    for path, content in ((a.json, json.dumps(res, indent=2)), (a.md, text)):
        if path:
            write_text(path, content)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
