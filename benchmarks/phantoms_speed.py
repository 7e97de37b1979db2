"""Time phantom generation (phantoms.generate_case) per modality and grid.

    PYTHONPATH=. python benchmarks/phantoms_speed.py [--repeats 2]

Rows: each modality on a 256x256x80 grid (1.5 x 1.5 x 3 mm), on a coarse training grid and on the
modality's default (randomly drawn, realistic) grid. Prints the best of --repeats runs in seconds,
without file writing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from phantoms import MODALITIES, generate_case  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    setups = [("256x256x80", dict(size=(256, 256, 80), spacing=(1.5, 1.5, 3.0), direction="axial")),
              ("coarse 2x2x5 mm", dict(spacing=(2.0, 2.0, 5.0))),
              ("default (drawn)", {})]
    print(f"{'modality':<9}{'grid':<18}{'size (x, y, z)':<18}{'Mvoxel':>8}{'seconds':>9}")
    for mod in MODALITIES:
        for name, opts in setups:
            best = float("inf")
            for r in range(args.repeats):
                t = time.perf_counter()
                img, _ = generate_case(100 + r, mod, **opts)
                best = min(best, time.perf_counter() - t)
            size = img.GetSize()
            mvox = size[0] * size[1] * size[2] / 1e6
            print(f"{mod:<9}{name:<18}{'x'.join(map(str, size)):<18}{mvox:>8.2f}{best:>9.2f}")


if __name__ == "__main__":
    main()
