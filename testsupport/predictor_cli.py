"""Running `python -m inference` in-process from tests, and listing what it wrote."""
from __future__ import annotations

from pathlib import Path


def run(argv, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the predictor's command line on `argv` (pytest's capsys)."""
    from inference.cli import main
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def outputs(folder: Path) -> list[str]:
    """File names in `folder`, sorted; [] when it does not exist."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
