"""`pseudolabel`: predict a folder of images with a trained model, as one shard of a job array.

The sorted case list is split round-robin into `--parts` shards; shard `--part` (0-based) takes cases
part, part+parts, part+2*parts, ... so every shard gets a similar mix. Run one process per shard on a
cluster scheduler, e.g.

    Slurm:       #SBATCH --array=0-31      -> python -m labeltransfer pseudolabel IN OUT --model M --parts 32
    Kubernetes:  Indexed Job, completions 32 -> same command (the index comes from JOB_COMPLETION_INDEX)

Without --part the shard index is taken from SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN) or
JOB_COMPLETION_INDEX. Resumable: a case whose `<case>.nii.gz` exists in the output folder is skipped,
so rerunning a failed or pre-empted shard only does what is left.

Prediction uses the project's predictor (`inference.api.segment_folder`) on small chunks of cases: the
chunk's input files are symlinked into a private staging folder, the predictor writes into a staging
output folder, and finished labels are moved into the output folder by an atomic rename. A model whose
dataset.json declares MIND input gets its descriptors computed by the predictor, so MRI folders are
passed as they are.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labeltransfer import io


@dataclass
class ShardReport:
    part: int
    parts: int
    cases: list[str]                                         # this shard's cases
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)         # output existed already
    failed: dict[str, str] = field(default_factory=dict)     # case -> error
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"part": self.part, "parts": self.parts, "cases": len(self.cases), "done": self.done,
                "skipped": self.skipped, "failed": self.failed, "seconds": round(self.seconds, 2)}


def shard(cases: list[str], part: int, parts: int) -> list[str]:
    """Cases of shard `part` (0-based) out of `parts`: round-robin over the sorted case ids."""
    if parts < 1:
        raise ValueError(f"--parts must be >= 1, got {parts}")
    if not 0 <= part < parts:
        raise ValueError(f"--part must be in [0, {parts - 1}] for --parts {parts}, got {part}")
    return sorted(cases)[part::parts]


def part_from_environment(env: dict | None = None) -> int | None:
    """Shard index from the scheduler: Slurm array task (made 0-based) or Kubernetes indexed job."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" in env:
        return int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    if "JOB_COMPLETION_INDEX" in env:
        return int(env["JOB_COMPLETION_INDEX"])
    return None


def _default_segment_folder():
    # imported on use: the predictor is a separate package of this project
    from inference.api import segment_folder
    return segment_folder


def pseudolabel(input_dir: str | Path, output_dir: str | Path, model_dir: str | Path, part: int = 0,
                parts: int = 1, chunk: int = 8, folds=None, checkpoint: str = "checkpoint_final.pth",
                device: str = "auto", tta: bool = False, step_size: float = 0.5,
                segment_folder: Callable | None = None, log=print) -> ShardReport:
    """Predict this shard's cases of `input_dir` into `output_dir/<case>.nii.gz`; skip finished ones.

    segment_folder: the predictor entry point (default inference.api.segment_folder), called as
    segment_folder(in_dir, out_dir, model_dir, folds=, checkpoint=, device=, tta=, step_size=) and
    returning per-case results with .case, .ok, .error. One failing case or chunk never stops the rest.
    """
    t0 = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not Path(model_dir).is_dir():
        raise io.CaseError(f"{model_dir}: model folder not found")
    if chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {chunk}")
    all_cases = io.list_image_cases(input_dir)
    mine = shard(list(all_cases), part, parts)
    report = ShardReport(part, parts, mine)
    output_dir.mkdir(parents=True, exist_ok=True)
    todo = []
    for case in mine:
        if (output_dir / f"{case}{io.FILE_ENDING}").exists():
            report.skipped.append(case)
        else:
            todo.append(case)
    log(f"pseudolabel part {part}/{parts}: {len(mine)} cases, {len(report.skipped)} already done, "
        f"{len(todo)} to predict")
    if not todo:
        report.seconds = time.perf_counter() - t0
        return report
    segment = segment_folder or _default_segment_folder()

    staging = output_dir / f".staging_part{part}of{parts}"
    for start in range(0, len(todo), chunk):
        cases = todo[start:start + chunk]
        stage_in, stage_out = staging / "in", staging / "out"
        shutil.rmtree(staging, ignore_errors=True)  # leftovers of a killed run of this same shard
        stage_in.mkdir(parents=True)
        stage_out.mkdir(parents=True)
        for case in cases:
            for f in all_cases[case]:
                os.symlink(f.resolve(), stage_in / f.name)
        try:
            results = segment(str(stage_in), str(stage_out), str(model_dir), folds=folds, checkpoint=checkpoint,
                              device=device, tta=tta, step_size=step_size)
            by_case = {r.case: r for r in results}
        except Exception as e:  # noqa: BLE001  the whole chunk failed (e.g. out of memory): record, go on
            by_case = {}
            chunk_error = f"{type(e).__name__}: {e}"
        else:
            chunk_error = "the predictor returned no result for this case"
        for case in cases:
            r = by_case.get(case)
            produced = stage_out / f"{case}{io.FILE_ENDING}"
            if r is None:
                report.failed[case] = chunk_error
            elif not r.ok:
                report.failed[case] = str(r.error)
            elif not produced.is_file():
                report.failed[case] = f"the predictor reported success but wrote no {produced.name}"
            else:
                os.replace(produced, output_dir / produced.name)
                report.done.append(case)
        n = start + len(cases)
        log(f"  [{n}/{len(todo)}] {len(report.done)} done, {len(report.failed)} failed, "
            f"{time.perf_counter() - t0:.0f} s")
    shutil.rmtree(staging, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_dir", help="folder of <case>_0000.nii.gz images (raw intensities, also for MIND models)")
    p.add_argument("output_dir", help="folder for <case>.nii.gz labels (shared by all shards)")
    p.add_argument("--model", required=True, help="trained nnU-Net model folder (dataset.json, plans.json, fold_*)")
    p.add_argument("--part", type=int, default=None,
                   help="0-based shard index (default: from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX, else 0)")
    p.add_argument("--parts", type=int, default=1, help="number of shards (default 1)")
    p.add_argument("--chunk", type=int, default=8, help="cases per predictor call (default 8)")
    p.add_argument("--folds", type=str, default=None, help="comma-separated folds, e.g. 0 or 0,1,2 (default: model's)")
    p.add_argument("--checkpoint", default="checkpoint_final.pth")
    p.add_argument("--device", default="auto", help="auto, cuda, cpu (default auto)")
    p.add_argument("--tta", action="store_true", help="test-time mirroring")
    p.add_argument("--step-size", type=float, default=0.5, help="sliding-window step as a fraction of the patch")
    p.add_argument("--report", default=None,
                   help="JSON report path (default OUTPUT_DIR/pseudolabel_part<i>of<n>.json)")
    p.add_argument("--dry-run", action="store_true", help="list this shard's cases and exit")


def run(args: argparse.Namespace) -> int:
    part = args.part if args.part is not None else (part_from_environment() or 0)
    folds = None if args.folds is None else [f.strip() for f in args.folds.split(",")]
    if args.dry_run:
        for case in shard(list(io.list_image_cases(args.input_dir)), part, args.parts):
            print(case)
        return 0
    report = pseudolabel(args.input_dir, args.output_dir, args.model, part, args.parts, args.chunk, folds,
                         args.checkpoint, args.device, args.tta, args.step_size)
    path = args.report or str(Path(args.output_dir) / f"pseudolabel_part{part}of{args.parts}.json")
    io.write_json_atomic(report.as_dict(), path)
    print(f"pseudolabel part {part}/{args.parts}: {len(report.done)} predicted, {len(report.skipped)} skipped, "
          f"{len(report.failed)} failed in {report.seconds:.0f} s; report {path}")
    for case, err in report.failed.items():
        print(f"  {case}: {err}")
    return 1 if report.failed else 0
