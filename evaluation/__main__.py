"""CLI: score a folder of predictions against ground truth with the official FLARE 2024 Task 3 rules."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

SCORES_FILE = "scores.csv"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m evaluation",
        description="FLARE 2024 Task 3 DSC and NSD per organ, as the official scorer computes them. "
                    "Writes the official CSV (Name, 13 x _DSC, 13 x _NSD) and prints a per-organ table "
                    "(mean ± std over cases). A missing prediction scores 0; a prediction on another "
                    "grid than its ground truth is an error for that case (scored 0).")
    ap.add_argument("-p", "--pred", required=True, help="folder of predicted <case>.nii.gz")
    ap.add_argument("-g", "--gt", required=True, help="folder of ground-truth <case>.nii.gz")
    ap.add_argument("-o", "--output", required=True, type=Path,
                    help=f"folder to write the official CSV to, as {SCORES_FILE} (created)")
    ap.add_argument("--exact-z-range", action="store_true",
                    help="score aorta/IVC/esophagus on the full GT axial range [z_min, z_max] instead of "
                         "the official [z_min, z_max) that drops the top slice")
    ap.add_argument("-j", "--workers", type=int, default=1, help="parallel processes (default 1)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-case progress on stderr")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from .folder import score_folder, write_csv
    from .report import format_table

    try:
        result = score_folder(args.pred, args.gt, exact_z_range=args.exact_z_range,
                              workers=args.workers, progress=not args.quiet)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    csv_path = args.output / SCORES_FILE
    write_csv(result.rows, csv_path)
    print(format_table(result.rows))
    if args.exact_z_range:
        print("aorta/IVC/esophagus scored on the exact GT axial range (--exact-z-range)")
    for name in result.missing:
        print(f"missing prediction (scored 0): {name}")
    for name in result.extra:
        print(f"prediction without ground truth (ignored): {name}")
    for name in result.errors:
        print(f"error (scored 0): {name}")
    for msg in result.errors.values():
        print(f"error: {msg}", file=sys.stderr)
    print(f"wrote {csv_path}")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
