"""Run a Python module or entry point with torch's CUDA caching allocator capped, e.g. at an RTX 3090's 24 GiB.

    python -m benchmarks.flare.capped --gib 24 --module inference -- -i IN -o OUT
    python -m benchmarks.flare.capped --gib 24 --entry nnunetv2.inference.predict_from_raw_data:predict_entry_point_modelfolder -- ...

The cap is torch.cuda.set_per_process_memory_fraction(gib / total): allocations beyond it raise an
out-of-memory error as they would on the smaller card. The CUDA context itself (a few hundred MiB) is
outside the allocator and not capped, as on the real card. Without CUDA the cap is skipped with a note.
"""
from __future__ import annotations

import argparse
import importlib
import runpy
import sys
from collections.abc import Sequence

RTX3090_GIB = 24.0


def apply_cap(gib: float, log=print) -> float | None:
    """Cap every visible CUDA device's allocator at `gib` GiB; returns the fraction set, None without CUDA."""
    import torch
    if not torch.cuda.is_available():
        log(f"[capped] no CUDA device: the {gib:g} GiB allocator cap does not apply")
        return None
    fraction = None
    for i in range(torch.cuda.device_count()):
        total = torch.cuda.get_device_properties(i).total_memory
        fraction = min(1.0, gib * 2**30 / total)
        torch.cuda.set_per_process_memory_fraction(fraction, i)
        log(f"[capped] cuda:{i}: allocator capped at {gib:g} GiB of {total / 2**30:.1f} GiB "
            f"(fraction {fraction:.4f})")
    return fraction


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flare.capped", description=__doc__.split("\n\n")[0],
                                epilog="Arguments after -- go to the module or entry point.")
    p.add_argument("--gib", type=float, default=RTX3090_GIB, help="allocator cap in GiB (default 24)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--module", help="module to run as __main__ (like python -m)")
    what.add_argument("--entry", help="module:function to call (a console-script entry point)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    p = build_parser()
    a = p.parse_args(argv)
    apply_cap(a.gib, log=lambda m: print(m, file=sys.stderr, flush=True))
    if a.module:
        sys.argv = [a.module] + rest
        runpy.run_module(a.module, run_name="__main__", alter_sys=True)
        return 0
    mod_name, _, func = a.entry.partition(":")
    if not func:
        p.error(f"--entry needs module:function, got {a.entry!r}")
    sys.argv = [a.entry] + rest
    result = getattr(importlib.import_module(mod_name), func)()
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
