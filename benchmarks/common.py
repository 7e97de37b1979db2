"""Helpers every benchmark shares: the machine's name, its slug, the load average, the header every
results file carries, where results go, Dice, and case discovery.

One home for each: a results file names its machine with `machine_slug()` and states how it was made
with `run_metadata()`; Dice is the evaluation package's (`evaluation.surface.volume_dice`) with one
convention for empty masks; files are written atomically (inference.files.atomic) and cases found by
inference.files.cases.
"""
from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from inference.files.atomic import atomic_output, write_bytes, write_json, write_text  # noqa: F401  (re-exported)
from inference.files.cases import find_cases, list_image_cases, list_label_cases  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SCRATCH = RESULTS / "tmp"   # git-ignored work folders of the tools

if TYPE_CHECKING:   # numpy only where Dice is computed: benchmarks.record runs with a bare system Python
    import numpy as np


# --- the machine ---------------------------------------------------------------------------------------

def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (e.g. 'AMD EPYC'), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, which a container or cgroup narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


def cpu_description() -> str:
    """'CPU: <model> (<n> cores available)'."""
    return f"CPU: {cpu_name()} ({cpu_cores()} cores available)"


def slugify(text: str) -> str:
    """Lower-case words joined by '-' (file and folder names); trademark marks and 'processor' dropped."""
    text = re.sub(r"\((r|tm)\)|\bprocessor\b|\bcpu @.*?(?= \d+ cores|$)", " ", text.lower())
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-.")[:60]


def machine_slug(gpu: str | None = None) -> str:
    """The one name of a machine in results paths: 'gpu-<gpu name>' when a GPU measured, else
    'cpu-<cpu model>-<n>-cores' (e.g. 'cpu-amd-epyc-2-cores', 'gpu-nvidia-h100-80gb-hbm3')."""
    if gpu:
        return slugify(f"gpu {gpu.removeprefix('GPU: ')}")
    return slugify(f"cpu {cpu_name()} {cpu_cores()} cores")


def load_average() -> tuple[float, float, float]:
    """1-, 5- and 15-minute load averages (0s where the platform has none)."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return (0.0, 0.0, 0.0)


def load_text() -> str:
    """The load averages as '1.75/0.82/1.02'."""
    return "/".join(f"{x:.2f}" for x in load_average())


def git_commit() -> str:
    """HEAD's short hash, '+dirty' when tracked files differ; 'unknown' outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- results files -------------------------------------------------------------------------------------

def command_line(module: str | None = None, argv: Sequence[str] | None = None) -> str:
    """The command that made a results file, as a person would type it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    head = f"python -m {module}" if module else shlex.join([Path(sys.argv[0]).name])
    return " ".join([head, *map(shlex.quote, argv)]).strip()


def run_metadata(command: str, gpu: str | None = None, load_before: Iterable[float] | None = None) -> dict:
    """The header every results file carries: command, date (UTC), commit, machine (name and slug), load.

    `load_before`: the load averages read before the measurement began (default: now)."""
    return {"command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(),
            "machine": {"cpu": cpu_name(), "cores": cpu_cores(), "gpu": gpu, "slug": machine_slug(gpu)},
            "load_before": list(load_before) if load_before is not None else list(load_average()),
            "load_after": list(load_average())}


def metadata_markdown(meta: dict) -> str:
    """The header as the first lines of a Markdown results file."""
    m = meta["machine"]
    machine = f"{m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU")
    load = lambda xs: "/".join(f"{x:.2f}" for x in xs)   # noqa: E731
    return (f"Command: `{meta['command']}`  \nDate: {meta['date']}; commit {meta['commit']}  \n"
            f"Machine: {machine}; load {load(meta['load_before'])} before, {load(meta['load_after'])} after\n")


def write_text_table(tool: str, title: str, lines: Sequence[str], argv: Sequence[str] | None,
                     load_before: Iterable[float], output: Path | None = None) -> Path:
    """A plain-text table as <output or results_dir(tool)>/<tool>.md, under the common header."""
    meta = run_metadata(command_line(f"benchmarks.studies.{tool}", argv), load_before=load_before)
    return write_text((output or results_dir(tool)) / f"{tool}.md",
                      f"# {title}\n\n" + metadata_markdown(meta) + "\n```text\n" + "\n".join(lines) + "\n```\n")


def results_dir(tool: str, *variant: str, gpu: str | None = None, root: Path = RESULTS) -> Path:
    """benchmarks/results/<tool>/<machine slug>[/<variant>...]: where a tool's results for this machine go."""
    return root.joinpath(tool, machine_slug(gpu), *variant)


# --- memory --------------------------------------------------------------------------------------------

def own_memory_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB: VmRSS and VmHWM of /proc/self/status.

    VmHWM is the peak of this process's own address space. ru_maxrss (getrusage, os.wait4) is not: a
    child started from a large process inherits that process's peak through fork and exec."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


# --- accuracy ------------------------------------------------------------------------------------------

def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (evaluation's volume Dice); both empty: 1.0, the FLARE scorer's rule."""
    import numpy as np

    from evaluation.surface import volume_dice
    value = volume_dice(np.asarray(a, bool), np.asarray(b, bool))
    return 1.0 if np.isnan(value) else value


def dice_from_counts(intersection: int, sizes: int) -> float:
    """Dice from voxel counts |A & B| and |A| + |B| (pooled over cases), with `dice`'s empty rule."""
    return 1.0 if sizes == 0 else 2.0 * intersection / sizes


def dice_per_label(a: np.ndarray, b: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
    """{label: Dice of (a == label) and (b == label)} for each label, with `dice`'s empty-mask rule."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    return {int(v): dice(a == v, b == v) for v in labels}


__all__ = ["REPO", "RESULTS", "SCRATCH", "cpu_name", "cpu_cores", "cpu_description", "slugify", "machine_slug",
           "load_average", "load_text", "git_commit", "command_line", "run_metadata", "metadata_markdown",
           "results_dir", "dice", "dice_from_counts", "dice_per_label", "atomic_output", "write_bytes", "write_json",
           "write_text", "write_text_table", "find_cases", "list_image_cases", "list_label_cases", "own_memory_mb"]
