"""Run a command and keep what a reader of the docs needs from it: wall time, exit code, the last lines it
printed, sizes of paths after it, and a JSON result it printed last.

    python -m benchmarks.record NAME [--size PATH ...] [--tail 12] -- COMMAND [ARG ...]

Writes benchmarks/results/commands/<machine>/NAME.json with the header every results file carries
(benchmarks.common.run_metadata: command, date, commit, machine, load). The output is passed through to
the console as it comes. When the command's last line of output is a JSON object it is stored under
`result` (docker/image_sizes.sh --json prints one). `--size PATH` records the bytes under PATH after
the run (e.g. the .venv the command made). The README's "what you will see" and the image and venv
sizes are rendered from these files by `python -m benchmarks.report`. Exit code: the command's.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import REPO, load_average, results_dir, run_metadata, write_json

TOOL = "commands"


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (links not followed), like `du -sb` without block rounding."""
    if path.is_file():
        return path.lstat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                total += p.lstat().st_size
    return total


def last_json(lines: Sequence[str]) -> dict | None:
    """The last non-empty line parsed as a JSON object, or None."""
    for line in reversed(lines):
        if line.strip():
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def run(command: Sequence[str], tail: int) -> tuple[int, float, list[str]]:
    """(exit code, wall seconds, last `tail` lines of stdout+stderr); the output is echoed as it comes."""
    kept: deque[str] = deque(maxlen=max(tail, 1))
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        kept.append(line.rstrip("\n"))
    rc = proc.wait()
    return rc, time.perf_counter() - t0, list(kept)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.record", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("name", help="results file name (demo, ci, image_sizes_cpu, ...)")
    p.add_argument("--size", type=Path, action="append", default=[], metavar="PATH",
                   help="record the bytes under PATH after the run (repeatable; relative to the repository, or "
                        "absolute, e.g. the .venv of a fresh clone the command ran in)")
    p.add_argument("--tail", type=int, default=12, help="lines of output to keep (default 12)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder (default benchmarks/results/commands/<machine>)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("error: give the command after --", file=sys.stderr)
        return 2
    i = argv.index("--")
    a = build_parser().parse_args(argv[:i])
    command = argv[i + 1:]
    if not command:
        print("error: no command after --", file=sys.stderr)
        return 2
    load_before = load_average()
    rc, seconds, lines = run(command, a.tail)
    record = {"metadata": run_metadata(shlex.join(command), load_before=load_before), "returncode": rc,
              "seconds": round(seconds, 1), "output_tail": lines, "result": last_json(lines),
              "sizes_bytes": {str(p): tree_bytes(REPO / p) for p in a.size if (REPO / p).exists()}}
    out = write_json((a.output or results_dir(TOOL)) / f"{a.name}.json", record)
    print(f"record: {a.name}: exit {rc} after {seconds:.1f} s -> {out}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
