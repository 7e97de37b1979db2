"""`python -m labeltransfer TOOL ...`: the CT -> MRI label-transfer tools (one module per tool)."""
from __future__ import annotations

import argparse
import importlib
import sys

# tool -> (module in labeltransfer, one-line help)
TOOLS = {
    "descriptors": ("descriptors", "convert images or a raw dataset to 12-channel MIND-SSC descriptors"),
    "pseudolabel": ("pseudolabel", "predict a folder with a model, sharded (--part/--parts) and resumable"),
    "filter": ("filter_labels", "keep pseudo-labels that hold all 13 organs (optional volume bounds); report"),
    "propagate": ("propagate", "carry labels to other sequences of a subject (resampling + affine registration)"),
    "assemble": ("assemble", "build the final nnU-Net raw training dataset from MRI and CT sources"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labeltransfer", description=__doc__)
    sub = parser.add_subparsers(dest="tool", required=True, metavar="TOOL")
    for name, (module_name, help_) in TOOLS.items():
        module = importlib.import_module(f"labeltransfer.{module_name}")
        p = sub.add_parser(name, help=help_, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from labeltransfer.io import CaseError
    try:
        return args._run(args)
    except (CaseError, ValueError) as e:  # folder-level problems: one clear line, no traceback
        print(f"{args.tool}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
