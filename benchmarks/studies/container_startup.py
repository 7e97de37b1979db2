"""Container start-up: the organisers' command per case against the same case in a warm process.

    flock /tmp/flare-measure.lock python -m benchmarks.studies.container_startup [--image flare-mri-seg:latest]
                                                                  [-i samples/inputs] [--rounds 5]

Per round and case, one after the other (interleaved, so that the machine's load falls on all alike):
  1. the organisers' command (flare.contract.docker_run_command: `docker container run ... sh predict.sh`)
     on a folder holding only that case, with `--timings` appended to predict.sh's arguments: wall from
     `docker container run` to its exit, and the CLI's own record (imports, model load, stages, total);
  2. a bare container (`true` in the same image, the same run flags without the mounts): what Docker
     itself costs;
  3. the same case in this process, warm (the host checkout's model loaded once, one untimed warm-up run
     per case): `segment_case`'s wall;
  4. the critical chain alone (same flags, no mounts): a container that imports numpy,
     OpenVINO and the predictor's loader, loads the image's model as predict.sh does (without the
     localiser, which the default model's cases never run) and waits for its networks to compile, the
     earliest point a first tile could run.
The gap (1 - 3) is what running in a fresh container adds; it is split into Docker (2), the interpreter's
start and exit (1 minus the CLI's total minus 2), imports, model load and the case's stages run cold
(the container's stages minus the warm ones). These parts overlap (the compile runs beside the read), so
the chain (4) gives the floor: no first tile runs before it ends, and the container can do only the
read and preprocess beside it, so the gap's median is not expected below the median of 4's wall minus
the warm process's read and preprocess (single rounds scatter around it with the machine's noise, since
the warm network time varies from round to round). Medians over
the rounds; the load average is printed beside every figure. The container's labels are compared with
the warm run's (voxels differing).
Writes benchmarks/results/container_startup/<machine>/container_startup.{md,json} (or -o FOLDER).
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (REPO, command_line, cpu_description, load_average, metadata_markdown, results_dir,
                               run_metadata, write_json, write_text)
from flare.contract import docker_run_command

TIMINGS = "/workspace/outputs/.timings.json"   # inside the container; a dot file, not a case output


def organisers_run(image: str, case_file: Path, work: Path) -> dict:
    """The organisers' command on one case; its wall, the CLI's timings and the output file."""
    inputs, outputs = work / "inputs", work / "outputs"
    for folder in (inputs, outputs):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    shutil.copy2(case_file, inputs / case_file.name)
    cmd = docker_run_command(image, f"startup-{time.monotonic_ns()}", str(inputs), str(outputs))
    cmd[-1] += f" --timings {TIMINGS}"
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    record = json.loads((outputs / ".timings.json").read_text())
    return {"wall": wall, "timings": record, "output": next(outputs.glob("*.nii.gz"))}


def _without_mounts(image: str, label: str) -> list[str]:
    """The organisers' run flags for `image` without the inputs/outputs mounts (its command: cmd[-1])."""
    cmd = docker_run_command(image, f"startup-{label}-{time.monotonic_ns()}", "/unused", "/unused")
    mounts = {i for i, a in enumerate(cmd) if a == "-v"}
    return [a for i, a in enumerate(cmd) if i not in mounts and i - 1 not in mounts]


def bare_container(image: str) -> float:
    """Wall of `/bin/bash -c true` in the image with the organisers' run flags (no mounts)."""
    cmd = _without_mounts(image, "bare")
    cmd[-1] = "true"                  # in place of `sh predict.sh`
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


# Run in the image by critical_chain: the steps before a first tile can run, each timed; the same loader
# call as predict.sh (backend and precision auto), without the localiser and without reading an image.
CHAIN_PROBE = """
import json, os, time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import openvino
t2 = time.perf_counter()
from inference.loading import load_model
t3 = time.perf_counter()
model = load_model("weights", device="auto", roi=False)
t4 = time.perf_counter()
for network in model.networks:
    getattr(network, "compiled", None)
t5 = time.perf_counter()
print(json.dumps({"numpy": t1 - t0, "openvino": t2 - t1, "predictor_imports": t3 - t2,
                  "model_load": t4 - t3, "compile_wait": t5 - t4, "network": model.plan.describe()}))
os._exit(0)
"""


def critical_chain(image: str) -> dict:
    """Wall of a container that only gets the model ready for its first tile (CHAIN_PROBE), and its steps."""
    cmd = _without_mounts(image, "chain")
    cmd[-1] = f"python -c {shlex.quote(CHAIN_PROBE)}"
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: the critical-chain probe exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return {"wall": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def voxels_differing(a: Path, b: Path) -> int:
    import numpy as np
    import SimpleITK as sitk
    x, y = (sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in (a, b))   # copies: a view dies with its image
    return int(np.count_nonzero(x != y)) if x.shape == y.shape else -1


def measure(image: str, cases: list[Path], model_dir: Path, rounds: int, work: Path) -> list[dict]:
    from inference.api import segment_case
    from inference.files.cases import Case
    from inference.loading import load_model
    model = load_model(model_dir)
    host_out = work / "host"
    host_out.mkdir(parents=True, exist_ok=True)

    def in_process(case_file: Path) -> tuple[float, dict]:
        case = Case(case_file.name[: -len("_0000.nii.gz")], [case_file])
        start = time.perf_counter()
        result = segment_case(case, host_out, model)
        if not result.ok:
            raise SystemExit(f"error: {case_file}: {result.error}")
        return time.perf_counter() - start, result.timings
    for case_file in cases:
        in_process(case_file)       # warm-up: the in-process figure is a warm process's
    rows = []
    for r in range(rounds):
        for case_file in cases:
            load = load_average()[0]
            container = organisers_run(image, case_file, work / "container")
            bare = bare_container(image)
            chain = critical_chain(image)
            warm_wall, warm_stages = in_process(case_file)
            case = case_file.name[: -len("_0000.nii.gz")]
            row = {"round": r, "case": case, "docker_wall": container["wall"], "bare_container": bare, "chain": chain,
                   "cli_total": container["timings"]["total_seconds"], "startup": container["timings"]["startup"],
                   "container_stages": container["timings"]["cases"][0]["seconds"],
                   "in_process_wall": warm_wall, "in_process_stages": warm_stages,
                   "network": container["timings"]["network"],
                   "voxels_differing": voxels_differing(container["output"], host_out / f"{case}.nii.gz"),
                   "load": [load, load_average()[0]]}
            rows.append(row)
            print(f"  round {r} {case}: docker {row['docker_wall']:.2f} s, in-process {warm_wall:.2f} s, "
                  f"gap {row['docker_wall'] - warm_wall:.2f} s, bare {bare:.2f} s, chain {chain['wall']:.2f} s, "
                  f"load {row['load']}",
                  file=sys.stderr, flush=True)
    return rows


def breakdown(rows: list[dict]) -> dict:
    """Medians over the rounds of the wall times, the gap and its parts."""
    def med(values):
        return statistics.median(values)
    stages = sorted({k for r in rows for k in r["container_stages"]})
    return {"docker_wall": med(r["docker_wall"] for r in rows),
            "in_process_wall": med(r["in_process_wall"] for r in rows),
            "gap": med(r["docker_wall"] - r["in_process_wall"] for r in rows),
            "bare_container": med(r["bare_container"] for r in rows),
            "interpreter_start_and_exit": med(r["docker_wall"] - r["cli_total"] - r["bare_container"] for r in rows),
            "imports": med(r["startup"]["imports"] for r in rows),
            "model_load": med(r["startup"]["model_load"] for r in rows),
            "stages_cold_minus_warm": {s: med(r["container_stages"].get(s, 0.0) - r["in_process_stages"].get(s, 0.0)
                                              for r in rows) for s in stages},
            **_chain_summary(rows, med),
            "voxels_differing_max": max(r["voxels_differing"] for r in rows),
            "load": [min(x for r in rows for x in r["load"]), max(x for r in rows for x in r["load"])]}


CHAIN_STEPS = ("numpy", "openvino", "predictor_imports", "model_load", "compile_wait")
PRE_NETWORK_STAGES = ("read", "localize", "preprocess")   # what the container does beside the compile


def _chain_summary(rows: list[dict], med) -> dict:
    """The critical chain's medians and the gap's floor (rows measured before the chain have neither)."""
    if not all("chain" in r for r in rows):
        return {}
    return {"chain": {"wall": med(r["chain"]["wall"] for r in rows),
                      **{k: med(r["chain"][k] for r in rows) for k in CHAIN_STEPS}},
            "gap_floor": med(r["chain"]["wall"] - sum(r["in_process_stages"].get(s, 0.0) for s in PRE_NETWORK_STAGES)
                             for r in rows)}


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "Per case, medians over the rounds (seconds):", "",
             "| case | organisers' command | warm process | gap | bare container | interpreter start + exit "
             "| imports | model load | stages cold - warm | voxels differing | load avg (min-max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    parts = {case: breakdown([r for r in rows if r["case"] == case]) for case in cases}
    parts["**all cases**"] = breakdown(rows)
    for case, b in parts.items():
        cold = ", ".join(f"{k} {v:+.2f}" for k, v in b["stages_cold_minus_warm"].items() if abs(v) >= 0.005)
        lines.append(f"| {case} | {b['docker_wall']:.2f} | {b['in_process_wall']:.2f} | **{b['gap']:.2f}** | "
                     f"{b['bare_container']:.2f} | {b['interpreter_start_and_exit']:.2f} | {b['imports']:.2f} | "
                     f"{b['model_load']:.2f} | {cold} | {b['voxels_differing_max']} | "
                     f"{b['load'][0]:.1f}-{b['load'][1]:.1f} |")
    lines += ["", f"Network: {rows[0]['network']} (the container's first output line says why)."]
    if "chain" in parts["**all cases**"]:
        lines += ["", "The critical chain: a container that only gets the model ready for its first tile "
                  "(`docker container run` to exit; the steps inside it), and the floor of the gap it sets "
                  "(its wall minus the warm process's read and preprocess, which the container does beside "
                  "the compile). Medians (seconds):", "",
                  "| case | chain wall | numpy import | OpenVINO import | predictor imports | model load "
                  "| compile wait | floor of the gap | gap |", "|---|---|---|---|---|---|---|---|---|"]
        for case, b in parts.items():
            c = b["chain"]
            lines.append(f"| {case} | {c['wall']:.2f} | " + " | ".join(f"{c[k]:.2f}" for k in CHAIN_STEPS)
                         + f" | {b['gap_floor']:.2f} | **{b['gap']:.2f}** |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.container_startup",
                                description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="flare-mri-seg:latest", help="the image (default flare-mri-seg:latest)")
    p.add_argument("-i", "--input", type=Path, default=REPO / "samples" / "inputs",
                   help="folder of <case>_0000.nii.gz (default samples/inputs)")
    p.add_argument("-m", "--model", type=Path, default=REPO / "weights",
                   help="the model of the warm in-process run: the image's (default weights/)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="results folder (default benchmarks/results/container_startup/<machine>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 1:
        print("error: --rounds must be >= 1", file=sys.stderr)
        return 2
    cases = sorted(args.input.glob("*_0000.nii.gz"))
    if not cases:
        print(f"error: {args.input}: no <case>_0000.nii.gz files", file=sys.stderr)
        return 2
    if shutil.which("docker") is None or subprocess.run(["docker", "image", "inspect", args.image],
                                                        capture_output=True).returncode != 0:
        print(f"error: image {args.image} not found (build it: bash docker/build.sh)", file=sys.stderr)
        return 2
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="container_startup_") as tmp:
        rows = measure(args.image, cases, args.model, args.rounds, Path(tmp))
    meta = run_metadata(command_line("benchmarks.studies.container_startup", argv), load_before=load_before)
    header = (f"# Container start-up: the organisers' command against a warm process\n\n{metadata_markdown(meta)}\n"
              f"{cpu_description()}; image {args.image}; {args.rounds} interleaved rounds over {len(cases)} "
              f"case(s) of {args.input.name}/. The warm process is this checkout's model ({args.model.name}/) "
              f"in the host's Python, loaded once, one warm-up run per case.")
    text = markdown(rows, header)
    stem = (args.output or results_dir("container_startup")) / "container_startup"
    write_text(stem.with_suffix(".md"), text)
    write_json(stem.with_suffix(".json"), {"metadata": meta, "summary": breakdown(rows), "rows": rows})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
