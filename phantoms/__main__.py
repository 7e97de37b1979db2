"""CLI: write synthetic abdominal phantoms as an nnU-Net raw dataset."""
from __future__ import annotations

import argparse
import sys

from .generate import FIELDS
from .geometry import DIRECTION_CHOICES
from .tissues import MODALITIES


def _floats(n: int):
    def parse(text: str):
        vals = [float(v) for v in text.replace("x", ",").split(",") if v.strip()]
        if len(vals) != n:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
        return tuple(vals)
    return parse


def _ints3(text: str):
    vals = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"expected 3 comma-separated integers, got {text!r}")
    return tuple(vals)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m phantoms",
        description="Write synthetic abdominal phantoms with the 13 FLARE labels as an nnU-Net raw dataset "
                    "(imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json). Deterministic per "
                    "--seed.")
    ap.add_argument("-o", "--output", required=True, help="dataset folder to write")
    ap.add_argument("-n", "--num", type=int, required=True, help="number of subjects")
    ap.add_argument("--modality", default="t1",
                    help=f"modality, or a comma list cycled over subjects: {', '.join(MODALITIES)} (default t1)")
    ap.add_argument("--sequences", default=None,
                    help="comma list: image every subject in each of these (same anatomy, own grids, a few "
                         "mm/degrees apart); overrides --modality; case ids get the sequence as suffix")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    ap.add_argument("--first", type=int, default=1, help="number of the first case (default 1)")
    ap.add_argument("--prefix", default="phantom", help="case id prefix (default phantom)")
    ap.add_argument("--subset", choices=("Tr", "Ts"), default="Tr", help="imagesTr/labelsTr or imagesTs/labelsTs")
    ap.add_argument("--spacing", type=_floats(3), default=None, help="fixed spacing sx,sy,sz in mm")
    ap.add_argument("--inplane-range", type=_floats(2), default=None, help="draw in-plane spacing from lo,hi mm")
    ap.add_argument("--slice-range", type=_floats(2), default=None, help="draw slice spacing from lo,hi mm")
    ap.add_argument("--size", type=_ints3, default=None,
                    help="fixed grid size nx,ny,nz (default: field of view / spacing)")
    ap.add_argument("--field", choices=FIELDS, default="abdomen",
                    help="field of view drawn: abdomen (a slab of the upper abdomen, default) or large (chest "
                         "to pelvis, 400-480 mm each way, much air around the body: the organs fill about a "
                         "quarter of the volume)")
    ap.add_argument("--fov", type=_floats(3), default=None, help="fixed field of view fx,fy,fz in mm")
    ap.add_argument("--direction", default="random", help=f"one of {', '.join(DIRECTION_CHOICES)} (default random)")
    ap.add_argument("--variation", type=float, default=1.0, help="scale of anatomical variation (default 1)")
    ap.add_argument("--no-motion", action="store_true", help="no per-sequence rigid displacement")
    ap.add_argument("--name", default="FLAREPhantoms", help="dataset name in dataset.json")
    ap.add_argument("-j", "--workers", type=int, default=1, help="parallel processes (default 1)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)

    from .dataset import write_dataset

    options = {k: v for k, v in dict(spacing=args.spacing, inplane_range=args.inplane_range,
                                     slice_range=args.slice_range, size=args.size,
                                     fov_mm=args.fov).items() if v is not None}
    options["field"] = args.field
    try:
        ids = write_dataset(args.output, args.num, args.sequences or args.modality, args.seed,
                            all_sequences=args.sequences is not None, first=args.first, prefix=args.prefix,
                            subset=args.subset, name=args.name, workers=args.workers,
                            progress=not args.quiet, direction=args.direction, variation=args.variation,
                            motion=not args.no_motion, **options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(ids)} cases to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
