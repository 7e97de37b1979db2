"""Every results file a README or a docs/ page cites is committed: their numbers come from these files,
so a path that does not exist means a number without a source. Paths are read from every README.md of
the repository and every page under docs/: repository-relative paths under the folders that hold
results, and relative Markdown links. (That the numbers equal their files is tests/test_report.py's.)"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", ".pytest_cache", "build", "node_modules", "__pycache__", "outputs"}
RESULT_ROOTS = ("benchmarks/results", "labeltransfer/results", "weights", "docs", "tests/data", "samples",
                "docker/results")
# Scratch folders the READMEs name as git-ignored places for temporary data, not as sources.
NOT_SOURCES = {"benchmarks/results/tmp"}

_ROOTED = re.compile(r"(?<![\w./<>-])((?:%s)/[\w./-]*\w)" % "|".join(re.escape(r) for r in RESULT_ROOTS))
_LINK = re.compile(r"\]\(([^)#\s]+)\)")


def readmes() -> list[Path]:
    found = list((ROOT / "docs").glob("*.md"))
    for path in ROOT.rglob("README.md"):
        if not SKIP_DIRS.intersection(path.relative_to(ROOT).parts):
            found.append(path)
    return sorted(found)


def paths_in(text: str, readme_dir: Path) -> set[Path]:
    """Repository paths a README text cites: rooted result paths and relative links to files."""
    paths = {ROOT / m for m in _ROOTED.findall(text) if m not in NOT_SOURCES and "*" not in m}
    for link in _LINK.findall(text):
        if "://" not in link and not link.startswith("mailto:"):
            paths.add((readme_dir / link).resolve())
    return paths


def cited_paths(readme: Path) -> set[Path]:
    return paths_in(readme.read_text(encoding="utf-8"), readme.parent)


def test_the_readmes_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in readmes()}
    assert {"README.md", "benchmarks/README.md", "labeltransfer/README.md", "weights/README.md",
            "docs/results.md", "docs/measurements.md"} <= names


def test_the_parser_sees_rooted_paths_and_links():
    text = ("Table: `benchmarks/results/a.md`, rows in labeltransfer/results/b.md. See [c](../docs/c.png) "
            "and https://example.org/docs/d.md, `<work>/results/e.md`, weights/, benchmarks/results/tmp.")
    found = {p.relative_to(ROOT).as_posix() for p in paths_in(text, ROOT / "x")}
    assert found == {"benchmarks/results/a.md", "labeltransfer/results/b.md", "docs/c.png"}


@pytest.mark.parametrize("readme", readmes(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_cited_file_exists(readme):
    missing = sorted(p.relative_to(ROOT).as_posix() for p in cited_paths(readme) if not p.exists())
    assert not missing, f"{readme.relative_to(ROOT)} cites files that are not in the repository: {missing}"
