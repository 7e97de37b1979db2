"""Peak memory of our predictor on FLARE's largest validation case size, on CPU.

    python -m benchmarks.studies.large_image [--model DIR] [--size 1024 1024 82] [--spacing 0.39 0.39 3.0]

Writes an MRI-like volume of the given size (nibabel/SimpleITK x, y, z order) and spacing, runs
`python -m inference` on it in a child process (default model: a random-weight model folder with the
paper's target spacing and a narrow network, so the grids are the paper's) and prints wall time, the
per-stage seconds and the child's peak RSS against FLARE's 28 GB container limit.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmarks.common import command_line, load_average, metadata_markdown, results_dir, run_metadata, write_text
from inference.device import DEVICE_CHOICES

FLARE_RAM_LIMIT_GB = 28


def write_volume(path: Path, size_xyz: tuple[int, int, int], spacing_xyz: tuple[float, float, float]) -> None:
    """A body-like ellipse with a few organ-like bright regions and noise, float32, zero outside."""
    x, y, z = size_xyz
    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[-1:1:complex(0, y), -1:1:complex(0, x)]
    body = ((yy / 0.8) ** 2 + (xx / 0.9) ** 2 <= 1)
    organs = (((yy + 0.2) / 0.3) ** 2 + ((xx + 0.3) / 0.35) ** 2 <= 1) * 200.0 \
        + (((yy - 0.1) / 0.2) ** 2 + ((xx - 0.45) / 0.15) ** 2 <= 1) * 120.0
    plane = (body * 300.0 + organs).astype(np.float32)
    volume = np.empty((z, y, x), np.float32)
    for k in range(z):
        volume[k] = plane * (0.8 + 0.4 * k / max(z - 1, 1)) + rng.normal(0, 20, (y, x)).astype(np.float32) * body
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(path), useCompression=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.large_image", description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", type=Path, default=None, help="model folder (default: random 'small' preset)")
    parser.add_argument("--size", type=int, nargs=3, default=(1024, 1024, 82), metavar=("X", "Y", "Z"))
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.39, 0.39, 3.0), metavar=("X", "Y", "Z"))
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device (default auto)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="folder for large_image.md (default benchmarks/results/large_image/<machine>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    load_before = load_average()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            from testsupport.model_folder import write_preset
            model = write_preset(tmp / "model", "small")
        (tmp / "in").mkdir()
        print(f"writing a {args.size} volume at {args.spacing} mm ...", flush=True)
        write_volume(tmp / "in" / "large_0000.nii.gz", tuple(args.size), tuple(args.spacing))
        # GNU time reports the child's own peak RSS; getrusage(RUSAGE_CHILDREN) would also carry this
        # process's peak (the written volume) into the child's through fork and exec
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(tmp / "maxrss.txt"),
                               sys.executable, "-m", "inference", "-i", str(tmp / "in"), "-o", str(tmp / "out"),
                               "-m", str(model), "--device", args.device, "--timings", str(tmp / "t.json")])
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print("prediction failed", file=sys.stderr)
            return 1
        peak_gb = int((tmp / "maxrss.txt").read_text().split()[-1]) * 1024 / 1e9   # %M is KiB
        timings = json.loads((tmp / "t.json").read_text())
        out = sitk.ReadImage(str(tmp / "out" / "large.nii.gz"))
        assert out.GetSize() == tuple(args.size), out.GetSize()

    stages = timings["cases"][0]["seconds"]
    meta = run_metadata(command_line("benchmarks.studies.large_image", argv), load_before=load_before)
    lines = [
        metadata_markdown(meta),
        f"Large image: {args.size[0]}x{args.size[1]}x{args.size[2]} at {args.spacing} mm, model "
        f"{'random small preset' if args.model is None else args.model}; device {args.device}",
        "",
        "| wall (s) | imports | model load | read | preprocess | network | export | write | peak RSS (GB) | FLARE limit |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {wall:.1f} | {timings['startup']['imports']:.2f} | {timings['startup']['model_load']:.2f} | "
        + " | ".join(f"{stages[k]:.2f}" for k in ("read", "preprocess", "network", "export", "write"))
        + f" | {peak_gb:.2f} | {FLARE_RAM_LIMIT_GB} GB |",
    ]
    text = "\n".join(lines)
    print(text)
    write_text((args.output or results_dir("large_image")) / "large_image.md", text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
