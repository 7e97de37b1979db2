"""Every tool of the repository follows docs/cli.md: found by walking the packages, its parser imported
through `build_parser()` and checked option by option (sub-commands included)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("inference", "evaluation", "phantoms", "labeltransfer", "training", "benchmarks", "testsupport",
            "flare")
# Spellings docs/cli.md replaces: the convention's word for each.
FORBIDDEN = {"--force": "--overwrite", "--iters": "--iterations", "--out": "-o/--output",
             "--out-dir": "-o/--output", "--out-prefix": "-o/--output", "--output-dir": "-o/--output",
             "--dest": "-o/--output", "--inputs": "-i/--input", "--results": "-o/--output",
             "--model-dir": "-m/--model"}
SHORT = {"-i": "--input", "-o": "--output", "-m": "--model", "-q": "--quiet", "-j": "--workers", "-f": "--folds"}


def tool_modules() -> list[str]:
    """Modules runnable as `python -m`: a package's __main__, or a module with a __main__ guard."""
    found = []
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            path = ROOT / (info.name.replace(".", "/") + ("/__init__.py" if info.ispkg else ".py"))
            if path.is_file() and (info.name.endswith(".__main__")
                                   or 'if __name__ == "__main__":' in path.read_text()):
                found.append(info.name)
    return sorted(found)


TOOLS = tool_modules()


def test_the_walk_finds_the_tools():
    for expected in ("inference.__main__", "evaluation.__main__", "labeltransfer.__main__", "benchmarks.flare.harness",
                     "training.default_model", "testsupport.model_folder", "benchmarks.studies.phantoms_speed"):
        assert expected in TOOLS


def parsers(parser: argparse.ArgumentParser, name: str):
    """The parser and, recursively, every sub-command's parser, with a readable name."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from parsers(sub, f"{name} {sub_name}")


# inference/__main__.py runs the predictor on import (its start-up is timed from the first line); its
# parser lives in inference/cli.py.
PARSER_HOME = {"inference.__main__": "inference.cli"}


def build(module_name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(PARSER_HOME.get(module_name, module_name))
    assert hasattr(module, "build_parser"), f"{module_name}: a tool exposes build_parser() (docs/cli.md)"
    return module.build_parser()


@pytest.mark.parametrize("module_name", TOOLS)
def test_no_path_hacks(module_name):
    source = (ROOT / (module_name.replace(".", "/") + ".py")).read_text()
    assert "sys.path" not in source, f"{module_name}: runs as python -m, no sys.path edits"


@pytest.mark.parametrize("module_name", TOOLS)
def test_tool_follows_the_convention(module_name, capsys):
    top = build(module_name)
    package = module_name.removesuffix(".__main__")
    assert top.prog == f"python -m {package}", f"{module_name}: prog names the python -m command"
    with pytest.raises(SystemExit) as e:
        top.parse_args(["--help"])
    assert e.value.code == 0 and "usage: python -m" in capsys.readouterr().out
    for name, parser in parsers(top, package):
        for action in parser._actions:
            options = set(action.option_strings)
            where = f"{name} {'/'.join(action.option_strings)}"
            for bad, good in FORBIDDEN.items():
                assert bad not in options, f"{where}: use {good}, not {bad}"
            for short, long in SHORT.items():
                if short in options:
                    assert long in options, f"{where}: {short} is {long}"
            if "--output" in options:
                assert "folder" in (action.help or ""), f"{where}: -o/--output is a folder, and its help says so"
            if "--folds" in options:
                assert action.nargs == "+", f"{where}: folds are space-separated (nargs='+')"
            if "--device" in options:
                assert sorted(action.choices or ()) == ["auto", "cpu", "cuda"], f"{where}: auto|cpu|cuda"
                assert action.default == "auto", f"{where}: default auto"
            if options & {"--workers", "--threads", "--iterations"}:
                assert action.type is int, f"{where}: a count"
            if "--quiet" in options:
                assert "-q" in options and isinstance(action, argparse._StoreTrueAction), where


def test_forbidden_spellings_are_refused_at_the_command_line(tmp_path, capsys):
    """Not only absent from the parsers: an old spelling is a usage error (exit 2), not a silent no-op."""
    from inference.cli import build_parser
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["-i", str(tmp_path), "-o", str(tmp_path), "--force"])
    assert e.value.code == 2
    assert "unrecognized arguments: --force" in capsys.readouterr().err
