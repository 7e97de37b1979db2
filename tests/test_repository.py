"""The repository stands alone: no file cites notes that live outside it (docs/flare.md holds the
FLARE facts the code relies on)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", "build", "__pycache__", ".pytest_cache", "wheelhouse"}
TEXT = {".py", ".md", ".sh", ".toml", ".txt", ".cfg", ".json", ""}
OUTSIDE = re.compile(r"\.\./shared|/work/shared|\bFLARE\.md\b|\bDESIGN\.md\b")


def test_no_file_refers_outside_the_repository():
    offenders = []
    for path in ROOT.rglob("*"):
        if any(part in SKIP_DIRS for part in path.relative_to(ROOT).parts) or not path.is_file():
            continue
        if path.suffix not in TEXT or path.stat().st_size > 2_000_000 or path == Path(__file__):
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not offenders, "cite docs/flare.md instead:\n" + "\n".join(offenders)

