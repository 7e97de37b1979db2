"""Time the FLARE scorer (evaluation.score_case) on phantom label maps of growing size.

    python -m benchmarks.studies.evaluation_speed

For each grid, the ground truth is a CT phantom's label map and the prediction the same map shifted by
one voxel along x and y (a realistic, imperfect prediction: every organ gets a surface to compare).
Both are written as NIfTI and scored from disk, as the CLI does. Prints a table (seconds) and writes it
with the common header to benchmarks/results/evaluation_speed/<machine>/evaluation_speed.md (or -o FOLDER).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmarks.common import load_average, write_text_table
from evaluation import score_case
from phantoms import generate_case

GRIDS = [((256, 256, 80), (1.5, 1.5, 3.0)), ((512, 512, 100), (0.78, 0.78, 2.5))]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.evaluation_speed",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder for evaluation_speed.md (default benchmarks/results/evaluation_speed/<machine>)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load_before = load_average()
    lines = [f"{'grid (x, y, z)':<18}{'spacing mm':<20}{'read+score s':>14}{'mean DSC':>10}{'mean NSD':>10}"]
    print(lines[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for size, spacing in GRIDS:
            _, lab = generate_case(11, "ct", size=size, spacing=spacing, direction="axial")
            arr = sitk.GetArrayFromImage(lab)
            pred = sitk.GetImageFromArray(np.roll(arr, (1, 1), axis=(1, 2)))
            pred.CopyInformation(lab)
            g, p = os.path.join(tmp, "gt.nii.gz"), os.path.join(tmp, "pred.nii.gz")
            sitk.WriteImage(lab, g)
            sitk.WriteImage(pred, p)
            t = time.perf_counter()
            scores = score_case(p, g)
            dt = time.perf_counter() - t
            dsc = np.mean([v for k, v in scores.items() if k.endswith("_DSC")])
            nsd = np.mean([v for k, v in scores.items() if k.endswith("_NSD")])
            lines.append(f"{'x'.join(map(str, size)):<18}{'x'.join(map(str, spacing)):<20}{dt:>14.2f}{dsc:>10.4f}{nsd:>10.4f}")
            print(lines[-1], flush=True)
    out = write_text_table("evaluation_speed", "FLARE scorer speed", lines, argv, load_before, args.output)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
