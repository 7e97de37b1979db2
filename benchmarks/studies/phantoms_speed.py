"""Time phantom generation (phantoms.generate_case) per modality and grid.

    python -m benchmarks.studies.phantoms_speed [--repeats 2]

Rows: each modality on a 256x256x80 grid (1.5 x 1.5 x 3 mm), on a coarse training grid and on the
modality's default (randomly drawn, realistic) grid. Prints the best of --repeats runs in seconds,
without file writing, and writes the table with the common header to
benchmarks/results/phantoms_speed/<machine>/phantoms_speed.md (or -o FOLDER).
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import load_average, write_text_table
from phantoms import MODALITIES, generate_case


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.phantoms_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="runs per row; the best is shown (default 2)")
    ap.add_argument("-o", "--output", type=Path, default=None,
                    help="folder for phantoms_speed.md (default benchmarks/results/phantoms_speed/<machine>)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load_before = load_average()
    lines = []
    setups = [("256x256x80", dict(size=(256, 256, 80), spacing=(1.5, 1.5, 3.0), direction="axial")),
              ("coarse 2x2x5 mm", dict(spacing=(2.0, 2.0, 5.0))),
              ("default (drawn)", {})]
    lines.append(f"{'modality':<9}{'grid':<18}{'size (x, y, z)':<18}{'Mvoxel':>8}{'seconds':>9}")
    print(lines[-1], flush=True)
    for mod in MODALITIES:
        for name, opts in setups:
            best = float("inf")
            for r in range(args.repeats):
                t = time.perf_counter()
                img, _ = generate_case(100 + r, mod, **opts)
                best = min(best, time.perf_counter() - t)
            size = img.GetSize()
            mvox = size[0] * size[1] * size[2] / 1e6
            lines.append(f"{mod:<9}{name:<18}{'x'.join(map(str, size)):<18}{mvox:>8.2f}{best:>9.2f}")
            print(lines[-1], flush=True)
    out = write_text_table("phantoms_speed", "Phantom generation speed", lines, argv, load_before, args.output)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
