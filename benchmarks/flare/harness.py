"""Organiser-style efficiency harness: one run per case, memory sampled around it, summary at the end.

    python -m benchmarks.flare.harness -i CASES_DIR -o RESULTS_DIR --docker IMAGE [--gpu N]
    python -m benchmarks.flare.harness -i CASES_DIR -o RESULTS_DIR --direct [-m MODEL_DIR] [--device cpu]
    python -m benchmarks.flare.harness -i CASES_DIR -o RESULTS_DIR --direct --command 'TEMPLATE'

Per case, as the organisers do (docs/flare.md section 2-3): a fresh `inputs/` holding only
`<case>_0000.nii.gz` and an empty `outputs/`; the memory sampler starts; the clock starts just before
the run and stops when it returns; the sampler stops; `outputs/<case>.nii.gz` is collected (missing or
wrong-geometry outputs are flagged, never fatal). Raw samples go to `RESULTS_DIR/<case>.json` (keys
`gpu_memory` and `time` as the official JSON, plus timestamps and metadata), the run's output to
`RESULTS_DIR/logs/<case>.log`, predictions to `RESULTS_DIR/outputs/`. Then
`RESULTS_DIR/<label>_Efficiency.csv`, `<label>_memory.png` and `<label>_table.md` (benchmarks.flare.summary).

Modes:
  --docker IMAGE  the organisers' exact `docker container run` (flare.contract.docker_run_command), with
                  --gpus="device=N" when NVML sees a GPU, else without it (CPU run).
  --direct        no Docker: runs our CLI `python -m inference -i IN -o OUT [-m MODEL] ...` per case, or
                  any `--command` template with {input} {output} {model} {python} placeholders (used to
                  run nnU-Net's own predictor through the same harness).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flare.contract import INPUT_SUFFIX, OUTPUT_SUFFIX, docker_run_command
from benchmarks.common import atomic_output, load_average, run_metadata
from inference.device import DEVICE_CHOICES
from inference.files.cases import find_cases as discover_cases
from inference.files.reading import grid_difference

from .nifti_io import header_geometry
from .sampler import SamplerError, SamplerSet, SourceSpec, resolve_source
from .summary import summarise_folder

DEFAULT_DIRECT = "{python} -m inference -i {input} -o {output}"
# --sampler choices -> sampler timings (benchmarks.flare.sampler); the first one fills the official JSON keys.
SAMPLER_CHOICES = {"both": ("official", "lean"), "official": ("official",), "lean": ("lean",)}


@dataclass
class CaseMeasurement:
    """One container (or direct) run on one case: wall time, exit code, output check."""
    name: str
    time_s: float
    returncode: int
    output: str          # ok | missing | geometry mismatch: ... | unreadable: ...
    json_path: Path


def find_cases(inputs: str | os.PathLike, only: Sequence[str] | None = None) -> list[tuple[str, Path]]:
    """(case id, path) of every `<case>_0000.nii.gz` in `inputs`, sorted; `only` filters by case id."""
    inputs = Path(inputs)
    if not inputs.is_dir():
        raise FileNotFoundError(f"{inputs}: input folder does not exist")
    found, _ = discover_cases(inputs, num_channels=1, file_ending=OUTPUT_SUFFIX)
    cases = [(c.case_id, c.channel_files[0]) for c in found]
    if only:
        wanted = set(only)
        missing = wanted - {c for c, _ in cases}
        if missing:
            raise FileNotFoundError(f"{inputs}: no {INPUT_SUFFIX} file for case(s) {sorted(missing)}")
        cases = [(c, p) for c, p in cases if c in wanted]
    if not cases:
        raise FileNotFoundError(f"{inputs}: no *{INPUT_SUFFIX} files")
    return cases


def image_size(path: Path) -> str:
    """'x, y, z' voxel size from the header (the paper's Table 6 notation), '' if unreadable."""
    try:
        size = header_geometry(path)[0]
    except ValueError:
        return ""
    return ", ".join(str(s) for s in size)


def check_output(pred: Path, ref: Path) -> str:
    """'ok' if `pred` exists with the geometry of `ref` (size, spacing, origin, direction), else why not."""
    if not pred.is_file():
        return "missing"
    infos = []
    for p in (pred, ref):
        try:
            infos.append(header_geometry(p))  # SimpleITK, or nibabel where SimpleITK is not installed
        except ValueError as e:
            return f"unreadable: {p.name}: {e}"
    why = grid_difference(*infos)
    return f"geometry mismatch: {why}" if why else "ok"


def _fresh_dir(d: Path) -> Path:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    os.chmod(d, 0o777)  # the container may run as another user and must be able to write outputs/
    return d


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived during the run (`signum` says which)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _install_interrupt_handlers() -> Callable[[], None]:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread, once: a second signal while the
    cleanup runs is ignored, so it cannot cut the container's removal short. Returns a restorer."""
    fired: list[int] = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)
    return restore


def _stop_child(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to our own child's process group, SIGKILL if it is still there after `grace_s`."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def _run_sampled(argv: Sequence[str], sampler: SamplerSet, log_path: Path, env: dict | None,
                 attach: bool, on_interrupt: Callable[[], None] | None = None) -> tuple[float, float, int]:
    """Run argv with stdout/stderr to log_path. On Ctrl-C (or `Interrupted`) `on_interrupt` runs first
    (docker mode: kill and remove the container, which the client neither stops nor waits less for),
    then the child's process group gets SIGTERM.

    Returns (start time as time.time(), seconds from just before the start to the exit, return code).
    """
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(argv) + "\n")
        log.flush()
        t0 = time.time()
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        except OSError as e:
            log.write(f"cannot start: {e}\n")
            return t0, time.time() - t0, 127
        if attach:
            sampler.attach(proc.pid)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            try:
                if on_interrupt is not None:
                    on_interrupt()
            finally:
                _stop_child(proc)
            raise
        return t0, time.time() - t0, rc


def run_case(case: str, image: Path, argv_for: Callable[[Path, Path], list[str]], results: Path,
             spec: SourceSpec, interval: float = 0.1, env: dict | None = None,
             settle_s: float = 0.5, keep_output: bool = True,
             samplers: Sequence[str] = SAMPLER_CHOICES["both"]) -> CaseMeasurement:
    """Run one case in a fresh inputs/outputs pair under `results/work/`, sampled by one process per
    timing in `samplers`; write `<case>.json` (official keys from the first timing, the others under
    `traces`)."""
    work = results / "work"
    inputs = _fresh_dir(work / "inputs")
    outputs = _fresh_dir(work / "outputs")
    shutil.copy2(image, inputs / f"{case}{INPUT_SUFFIX}")
    (results / "logs").mkdir(parents=True, exist_ok=True)
    argv = argv_for(inputs, outputs)
    loads_before = load_average()
    load_before = loads_before[0]  # 1-minute load, written beside the timing
    sampler = SamplerSet(spec, interval, samplers).start()
    try:
        time.sleep(settle_s)  # a few samples before the run, as the official loop has
        run_start, elapsed, rc = _run_sampled(argv, sampler, results / "logs" / f"{case}.log", env,
                                              attach=spec.kind == "rss-tree",
                                              on_interrupt=getattr(argv_for, "on_interrupt", None))
        time.sleep(min(settle_s, 0.2))
    finally:
        by_timing = sampler.stop()
    load_after = load_average()[0]
    samples = by_timing[samplers[0]]
    pred = outputs / f"{case}{OUTPUT_SUFFIX}"
    status = check_output(pred, image)
    if pred.is_file() and keep_output:
        (results / "outputs").mkdir(exist_ok=True)
        shutil.move(str(pred), results / "outputs" / pred.name)
    # Rounded for size only: NVML MiB are integers; 0.01 MiB, 0.1 ms and 0.01 % are below any effect.
    record = {
        "gpu_memory": [round(m, 2) for m in samples["memory"]],  # official key; MiB (GPU or CPU fallback)
        "time": elapsed,                   # official key; s, just before the run to its return
        "cpu_list": [[round(v, 2) for v in c] for c in samples["cpu"]],
        "RAM_list": [round(r, 2) for r in samples["ram"]],
        "timestamps": [round(t, 4) for t in samples["timestamps"]],
        "run_start": run_start,
        "sampler": samplers[0],            # timing of the trace in the official keys
        "traces": {t: {"gpu_memory": [round(m, 2) for m in r["memory"]],
                       "timestamps": [round(x, 4) for x in r["timestamps"]]}
                   for t, r in by_timing.items() if t != samplers[0]},
        "memory_source": samples["source"],
        "device": samples["device"],
        "interval": interval,
        "load_avg_1min": [round(load_before, 2), round(load_after, 2)],  # before, after the case
        "returncode": rc,
        "output": status,
        "image_size": image_size(image),
        "command": shlex.join(argv),
        "metadata": run_metadata(shlex.join(argv), gpu=spec.device if spec.kind == "nvml" else None,
                                 load_before=loads_before),
    }
    js = results / f"{case}.json"
    with atomic_output(js, mode=0o644) as tmp:
        tmp.write_text(json.dumps(record))
    return CaseMeasurement(case, elapsed, rc, status, js)


def direct_argv(template: str, model: str | None, extra: Sequence[str] = ()) -> Callable[[Path, Path], list[str]]:
    """argv builder for --direct: fills {python} {input} {output} {model}; adds -m MODEL to our CLI."""
    def build(inputs: Path, outputs: Path) -> list[str]:
        filled = template.format(python=shlex.quote(sys.executable), input=shlex.quote(str(inputs)),
                                 output=shlex.quote(str(outputs)), model=shlex.quote(model or ""))
        argv = shlex.split(filled)
        if template == DEFAULT_DIRECT and model:
            argv += ["-m", model]
        return argv + list(extra)
    return build


def docker_argv(image: str, name: str, gpu: int | None) -> Callable[[Path, Path], list[str]]:
    """argv builder for --docker: the organisers' command from flare.contract. Its `on_interrupt`
    kills and removes the container: PID 1 in it (bash) ignores the SIGTERM the docker client forwards,
    so after a Ctrl-C the container would otherwise run to its end, holding the GPU and the name."""
    def build(inputs: Path, outputs: Path) -> list[str]:
        return docker_run_command(image, name, str(inputs.resolve()), str(outputs.resolve()), gpu=gpu)

    def remove_container() -> None:
        print(f"interrupted: stopping and removing container {name}", file=sys.stderr, flush=True)
        remove_container_now(name)

    build.on_interrupt = remove_container
    return build


def _container_state(name: str) -> tuple[str, bool] | None:
    """(State.Status such as 'running' or 'removing', whether the daemon auto-removes it (--rm)) of
    container `name`; None when there is no such container."""
    r = subprocess.run(["docker", "container", "inspect", "-f", "{{.State.Status}} {{.HostConfig.AutoRemove}}",
                        name], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return None
    status, auto_remove = r.stdout.split()
    return status, auto_remove == "true"


def remove_container_now(name: str, wait_s: float = 15.0) -> None:
    """Kill container `name` now and make sure it is gone. For a `--rm` container (the organisers'
    command) `docker kill` is all: the daemon removes it as it exits, and a `docker rm --force` racing
    that removal is what makes dockerd log "removal ... is already in progress". `rm --force` comes only
    for a container without --rm, or one still there after `wait_s`."""
    subprocess.run(["docker", "container", "kill", name], capture_output=True, timeout=30)
    deadline = time.monotonic() + wait_s
    while (state := _container_state(name)) is not None and time.monotonic() < deadline:
        status, auto_remove = state
        if not auto_remove and status not in ("running", "restarting"):
            break      # exited, and nobody else will remove it
        time.sleep(0.2)
    if state is not None:
        subprocess.run(["docker", "container", "rm", "--force", name], capture_output=True, timeout=60)


def docker_engine_available() -> tuple[bool, str]:
    """(True, '') if `docker info` reaches an engine, else (False, why)."""
    if shutil.which("docker") is None:
        return False, "no docker client on PATH"
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                           text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"docker info failed: {e}"
    if r.returncode != 0 or not r.stdout.strip():
        return False, (r.stderr.strip().splitlines() or ["docker engine not reachable"])[-1]
    return True, ""


def run_harness(cases: Sequence[tuple[str, Path]], argv_for, results: str | os.PathLike, spec: SourceSpec,
                label: str, interval: float = 0.1, env: dict | None = None, title: str = "",
                time_tolerance_s: float = 15.0, gpu_tolerance_mib: float = 4096.0,
                keep_work: bool = False, keep_outputs: bool = True, log=print,
                samplers: Sequence[str] = SAMPLER_CHOICES["both"]):
    """Run every case; one failing case never stops the others. Returns (case results, summary rows, md path)."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    out: list[CaseMeasurement] = []
    for i, (case, image) in enumerate(cases, 1):
        log(f"[{label}] case {i}/{len(cases)}: {case} ...")
        try:
            r = run_case(case, image, argv_for, results, spec, interval, env, keep_output=keep_outputs,
                         samplers=samplers)
        except (SamplerError, OSError) as e:
            log(f"[{label}]   {case}: FAILED before or around the run: {e}")
            continue
        flag = "" if r.returncode == 0 and r.output == "ok" else \
            f"  <-- rc={r.returncode}, output {r.output} (see {results / 'logs' / (case + '.log')})"
        log(f"[{label}]   {case}: {r.time_s:.2f} s{flag}")
        out.append(r)
    if not keep_work:
        shutil.rmtree(results / "work", ignore_errors=True)
    if not out:
        raise RuntimeError(f"[{label}] no case produced a measurement")
    rows, csv_path, png, md = summarise_folder(results, results / label, title or label, spec.device,
                                               interval_s=interval, time_tolerance_s=time_tolerance_s,
                                               gpu_tolerance_mib=gpu_tolerance_mib)
    log(f"[{label}] wrote {csv_path}, {png}, {md}")
    return out, rows, md


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flare.harness",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("-i", "--input", dest="inputs", required=True, help="folder with <case>_0000.nii.gz files")
    p.add_argument("-o", "--output", dest="results", required=True,
                   help="results folder (created): <case>.json per case, summary.csv/.md, memory plot")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--docker", metavar="IMAGE", help="image name (tag :latest unless given)")
    mode.add_argument("--direct", action="store_true", help="run the predictor CLI without Docker")
    p.add_argument("--name", help="container name for --docker (default: the image name without tag)")
    p.add_argument("-m", "--model", dest="model_dir",
                   help="--direct: model folder for our CLI / {model} in --command")
    p.add_argument("--command", default=DEFAULT_DIRECT,
                   help="--direct: command template; placeholders {python} {input} {output} {model} "
                        f"(default: '{DEFAULT_DIRECT}' plus -m MODEL_DIR)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="--direct with our CLI: passed as --device (default auto)")
    p.add_argument("--gpu", type=int, default=0, help="GPU index: NVML device and --gpus device=N")
    p.add_argument("--memory", choices=["auto", "gpu", "cpu"], default="auto",
                   help="what to sample: GPU (NVML), CPU memory, or GPU when available (default)")
    p.add_argument("--interval", type=float, default=0.1, help="sleep between polls (s), official 0.1")
    p.add_argument("--sampler", choices=list(SAMPLER_CHOICES), default="both",
                   help="official: the organisers' per-sample queries, then sleep (its AUC estimates theirs); "
                        "lean: ours, denser; both (default): one process each, official in the official keys")
    p.add_argument("--cases", nargs="+", help="only these case ids")
    p.add_argument("--label", help="name for the summary files (default: image name or 'direct')")
    p.add_argument("--time-tolerance", type=float, default=15.0, help="s, for the adjusted columns")
    p.add_argument("--gpu-tolerance", type=float, default=4096.0, help="MiB, for the adjusted columns")
    p.add_argument("--keep-work", action="store_true", help="keep RESULTS/work (last case's in/outputs)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        cases = find_cases(a.inputs, a.cases)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.docker:
        ok, why = docker_engine_available()
        if not ok:
            print(f"error: --docker needs a Docker engine: {why}", file=sys.stderr)
            return 2
        image = a.docker
        name = a.name or image.split("/")[-1].split(":")[0]
        spec = resolve_source(a.memory, a.gpu, container=name)
        gpu = a.gpu if spec.kind == "nvml" else None
        argv_for = docker_argv(image, name, gpu)
        label = a.label or name
    else:
        extra = ["--device", a.device] if a.device and a.command == DEFAULT_DIRECT else []
        spec = resolve_source(a.memory, a.gpu)
        argv_for = direct_argv(a.command, a.model_dir, extra)
        label = a.label or "direct"
    print(f"[{label}] {len(cases)} case(s); memory source {spec.kind} on {spec.device}", flush=True)
    restore_signals = _install_interrupt_handlers()
    try:
        _, _, md = run_harness(cases, argv_for, a.results, spec, label, a.interval,
                               time_tolerance_s=a.time_tolerance, gpu_tolerance_mib=a.gpu_tolerance,
                               keep_work=a.keep_work, samplers=SAMPLER_CHOICES[a.sampler])
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        if not a.docker:
            what = "the running case stopped"
        elif _container_state(name) is None:
            what = f"container {name} stopped and removed"
        else:
            what = f"container {name} is still there: remove it with docker rm -f {name}"
        print(f"[{label}] interrupted by {signal.Signals(signum).name}: {what}; finished cases' "
              f"measurements are in {a.results}, no summary written", file=sys.stderr)
        return 128 + signum
    finally:
        restore_signals()
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
