"""`pseudolabel`: predict a folder of images with a trained model, as one shard of a job array.

The sorted case list is split round-robin into `--parts` shards; shard `--part` (0-based) takes cases
part, part+parts, part+2*parts, ... so every shard gets a similar mix. Run one process per shard on a
cluster scheduler, e.g.

    Slurm:       #SBATCH --array=0-31      -> python -m labeltransfer pseudolabel IN OUT --model M --parts 32
    Kubernetes:  Indexed Job, completions 32 -> same command (the index comes from JOB_COMPLETION_INDEX)

Without --part the shard index is taken from SLURM_ARRAY_TASK_ID (array indices are the shard numbers,
0..parts-1, so a resubmitted `--array=5,9` redoes shards 5 and 9) or JOB_COMPLETION_INDEX. Resumable: a case whose `<case>.nii.gz` exists in the output folder is skipped,
so rerunning a failed or pre-empted shard only does what is left.

Prediction is the project's predictor: the model is loaded once per shard and
`inference.api.segment_folder` runs on this shard's case list, writing every label straight into the
output folder (atomically: a killed shard leaves no partial file). A model whose dataset.json declares
MIND input gets its descriptors computed by the predictor, so MRI folders are passed as they are.
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inference.device import DEVICE_CHOICES
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
    """Shard index from the scheduler: the Slurm array task id itself (never offset by
    SLURM_ARRAY_TASK_MIN: a partial resubmission must keep its shard numbers) or the Kubernetes
    indexed job's completion index."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" in env:
        return int(env["SLURM_ARRAY_TASK_ID"])
    if "JOB_COMPLETION_INDEX" in env:
        return int(env["JOB_COMPLETION_INDEX"])
    return None


def pseudolabel(input_dir: str | Path, output_dir: str | Path, model_dir: str | Path, part: int = 0,
                parts: int = 1, folds=None, checkpoint: str = "checkpoint_final.pth", device: str = "auto",
                tta: bool = False, step_size: float = 0.5, model=None, segment_folder: Callable | None = None,
                log=print) -> ShardReport:
    """Predict this shard's cases of `input_dir` into `output_dir/<case>.nii.gz`; skip finished ones.

    model: a loaded model (inference.loading.LoadedModel); default: loaded once here from model_dir.
    segment_folder: the per-folder loop (default inference.api.segment_folder), called with this
    shard's cases and a per-case callback. One failing case never stops the rest.
    """
    from inference.files.cases import Case
    t0 = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if model is None and not Path(model_dir).is_dir():
        raise io.CaseError(f"{model_dir}: model folder not found")
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
    if model is None:
        from inference.device import resolve_device
        from inference.loading import load_model
        model = load_model(model_dir, folds, checkpoint, resolve_device(device))
    if segment_folder is None:
        from inference.api import segment_folder
    cases = [Case(c, [input_dir / f"{c}_{k:04d}{model.file_ending}" for k in range(model.num_input_files)])
             for c in todo]

    def record(result) -> None:
        produced = output_dir / f"{result.case}{io.FILE_ENDING}"
        if not result.ok:
            report.failed[result.case] = str(result.error)
        elif not produced.is_file():
            report.failed[result.case] = f"the predictor reported success but wrote no {produced.name}"
        else:
            report.done.append(result.case)
        state = "ok" if result.case in report.done else f"FAILED: {report.failed[result.case]}"
        log(f"  [{len(report.done) + len(report.failed)}/{len(todo)}] {result.case}: {state} "
            f"({time.perf_counter() - t0:.0f} s)")

    try:
        segment_folder(input_dir, output_dir, model=model, cases=cases, tta=tta, step_size=step_size,
                       on_result=record)
    except Exception as e:  # noqa: BLE001  the loop itself died: the cases it did not reach are failed
        from inference.files.reading import describe_failure
        for case in todo:
            if case not in report.done and case not in report.failed:
                report.failed[case] = describe_failure(input_dir / case, e)
    report.seconds = time.perf_counter() - t0
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_dir", help="folder of <case>_0000.nii.gz images (raw intensities, also for MIND models)")
    p.add_argument("output_dir", help="folder for <case>.nii.gz labels (shared by all shards)")
    p.add_argument("-m", "--model", required=True, help="trained nnU-Net model folder (dataset.json, plans.json, fold_*)")
    p.add_argument("--part", type=int, default=None,
                   help="0-based shard index (default: from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX, else 0)")
    p.add_argument("--parts", type=int, default=1, help="number of shards (default 1)")
    p.add_argument("--folds", nargs="+", default=None, help="folds, e.g. 0 or 0 1 2 (default: every fold of the model)")
    p.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file name in each fold")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device (auto: cuda when available)")
    p.add_argument("--tta", action="store_true", help="test-time mirroring")
    p.add_argument("--step-size", type=float, default=0.5, help="sliding-window step as a fraction of the patch")
    p.add_argument("--report", default=None,
                   help="JSON report path (default OUTPUT_DIR/pseudolabel_part<i>of<n>.json)")
    p.add_argument("--dry-run", action="store_true", help="list this shard's cases and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-case progress lines")


def run(args: argparse.Namespace) -> int:
    part = args.part if args.part is not None else (part_from_environment() or 0)
    if args.dry_run:
        for case in shard(list(io.list_image_cases(args.input_dir)), part, args.parts):
            print(case)
        return 0
    report = pseudolabel(args.input_dir, args.output_dir, args.model, part, args.parts, args.folds,
                         args.checkpoint, args.device, args.tta, args.step_size,
                         log=(lambda *_: None) if args.quiet else print)
    path = args.report or str(Path(args.output_dir) / f"pseudolabel_part{part}of{args.parts}.json")
    report_written = True
    try:
        io.write_json_atomic(report.as_dict(), path)
        written = f"report {path}"
    except io.CaseError as e:   # e.g. the disk filled up: the labels written are complete, say so
        report_written, written = False, f"report NOT written: {e}"
    print(f"pseudolabel part {part}/{args.parts}: {len(report.done)} predicted, {len(report.skipped)} skipped, "
          f"{len(report.failed)} failed in {report.seconds:.0f} s; {written}")
    for case, err in report.failed.items():
        print(f"  {case}: {err}")
    if any("full disk" in err or "no space left" in err for err in report.failed.values()):
        print(f"stopped early: {args.output_dir} is on a full disk; free space and rerun this shard (finished "
              f"cases are kept and skipped)")
    return 1 if report.failed or not report_written else 0
