"""`python -m inference.estimate -i FILE [-m MODEL] [--device auto|cpu|cuda]`: what a case would cost in
memory, stage by stage, from its header alone (no voxel is read), beside what the process may use."""
from __future__ import annotations

from pathlib import Path

from inference import InferenceError
from inference.files.reading import header_geometry
from inference.memory.cost import ModelShape, _gib, _xyz, check_grid, estimate, host_limit
from inference.model.folder import DEFAULT_MODEL_DIR
from inference.loading import load_model


def build_parser():
    import argparse
    from inference.device import DEVICE_CHOICES
    parser = argparse.ArgumentParser(prog="python -m inference.estimate",
                                     description="Estimate a case's peak memory per stage from its header "
                                                 "(no voxel is read) and compare it with the memory limit.")
    parser.add_argument("-i", "--input", required=True, type=Path, help="a <case>_0000.nii.gz file")
    parser.add_argument("-m", "--model", type=Path, default=None, help="model folder (default: weights/)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="device whose layout to estimate for (auto: cuda when available)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m inference.estimate -i FILE [-m MODEL] [--device auto|cpu|cuda]`: the estimate, stage by stage."""
    args = build_parser().parse_args(argv)
    from inference.device import resolve_device
    try:
        model = load_model(args.model or DEFAULT_MODEL_DIR, device=resolve_device(args.device))
        shape, spacing, bytes_per_voxel = header_geometry(args.input)
        shape_of = ModelShape.of(model)
        check_grid(shape, spacing, shape_of, str(args.input))
        e = estimate(shape, spacing, 1, bytes_per_voxel, shape_of, model.device.type == "cuda")
    except InferenceError as err:
        print(f"error: {err}")
        return 2
    print(f"{args.input}: size {_xyz(shape)}, resampled {_xyz(e.resampled_shape)}")
    for where, stages in (("host", e.host), ("device", e.device)):
        for stage, n in stages.items():
            print(f"  {where:6s} {stage:10s} {_gib(n)}")
    limit = host_limit()
    print(f"host limit: {_gib(limit.bytes)} ({limit.source})" if limit else "host limit: unknown")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
