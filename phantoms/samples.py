"""The committed sample cases (samples/): three small MRI phantoms with ground truth.

    python -m phantoms.samples            # rewrites samples/inputs and samples/labels

| case         | subject seed | sequence | grid (spacing mm)           | direction            |
|--------------|--------------|----------|-----------------------------|----------------------|
| phantom_0001 | 1001         | T1       | 2.2 x 2.2 x 5.0             | oblique (tilted)     |
| phantom_0002 | 1001         | T2       | 2.4 x 2.4 x 6.0             | axial                |
| phantom_0003 | 1002         | T1c      | 2.3 x 2.3 x 4.5             | x and y flipped      |

phantom_0001 and phantom_0002 are one subject (same anatomy, own grids, a few mm and degrees apart),
as two sequences of one MRI study. Files: inputs/<case>_0000.nii.gz (the FLARE input name) and
labels/<case>.nii.gz.
"""
from __future__ import annotations

import argparse
import os
import sys

from .dataset import _atomic_write
from .generate import generate_case

SAMPLES = (
    ("phantom_0001", 1001, "t1", dict(spacing=(2.2, 2.2, 5.0), direction="oblique")),
    ("phantom_0002", 1001, "t2", dict(spacing=(2.4, 2.4, 6.0), direction="axial")),
    ("phantom_0003", 1002, "t1c", dict(spacing=(2.3, 2.3, 4.5), direction="flip_xy")),
)
DEFAULT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples")


def sample_case(case_id: str):
    """(image, label) SimpleITK images of one sample case, generated afresh."""
    for cid, seed, modality, options in SAMPLES:
        if cid == case_id:
            return generate_case(seed, modality, **options)
    raise KeyError(f"no sample case {case_id!r}; known: {', '.join(c[0] for c in SAMPLES)}")


def write_samples(out_dir: str = DEFAULT_DIR) -> list[str]:
    """Write every sample case under out_dir/inputs and out_dir/labels; returns the written paths."""
    paths = []
    for cid, _, _, _ in SAMPLES:
        img, lab = sample_case(cid)
        for sub, name, image in (("inputs", f"{cid}_0000.nii.gz", img), ("labels", f"{cid}.nii.gz", lab)):
            folder = os.path.join(out_dir, sub)
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, name)
            _atomic_write(image, path)
            paths.append(path)
    return paths


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m phantoms.samples",
                                 description="Regenerate the committed sample cases (three MRI phantoms).")
    ap.add_argument("-o", "--output", default=DEFAULT_DIR, help=f"folder (default {DEFAULT_DIR})")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    for p in write_samples(args.output):
        print(f"wrote {p}  ({os.path.getsize(p) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
