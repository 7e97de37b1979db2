"""The predictor's structure as docs/architecture.md draws it: which part may import which, no import
cycles, one place that chooses the engine, short functions. Read from the source (ast), nothing run."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "inference"

# part -> the parts it may import (docs/architecture.md, "The parts, and what each may import").
LEAVES = {"device", "timings", "mind", "mind_definition", "root"}
ALLOWED = {
    "files": set(),
    "rules": set(),
    "model": {"files", "mind"},
    "networks": {"model"},
    "memory": {"rules"},
    "engines": {"memory", "networks", "rules", "model", "device", "mind"},
    "roi": {"engines", "rules", "model"},
    "loading": {"engines", "networks", "model", "files", "device"},
    "api": {"loading", "roi", "engines", "memory", "model", "files", "rules", "networks", "device"},
    "commands": {"api", "loading", "roi", "engines", "memory", "model", "files", "rules", "networks", "device"},
}
COMMANDS = {"cli", "__main__", "weights", "estimate"}
TOOLS = ("benchmarks", "labeltransfer", "training", "evaluation", "phantoms", "testsupport")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    name = parts[1]
    return "commands" if name in COMMANDS else name


def imports_of(path: Path) -> set[str]:
    """Every module of the package or outside it that `path` imports, at any depth of the code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {m: {i for i in imports_of(p) if i in MODULES and i != m and i != "inference"} for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_part_imports_only_the_parts_below_it(module):
    part = part_of(module)
    allowed = ALLOWED.get(part, set()) | LEAVES | {part}
    if part in LEAVES:
        allowed = LEAVES   # leaves import only each other
    wrong = sorted(i for i in GRAPH[module] if part_of(i) not in allowed)
    assert not wrong, f"{module} ({part}) imports {wrong}"


def test_no_import_cycles():
    state: dict[str, int] = {}   # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in GRAPH[module]:
            assert state.get(target) != 1, "cycle: " + " -> ".join(path[path.index(target):] + [target]) \
                if target in path else f"cycle through {target}"
            if target not in state:
                visit(target, path + [target])
        state[module] = 2
    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_the_predictor_imports_none_of_the_tools():
    for module, path in MODULES.items():
        outside = [i for i in imports_of(path) if i.split(".")[0] in TOOLS]
        assert not outside, f"{module} imports {outside}"


def test_the_engine_is_chosen_in_one_place():
    """Only engines/choice.py builds an engine; nothing outside engines/ tests the backend's name."""
    for module, path in MODULES.items():
        text = path.read_text()
        builds = "NumpyEngine(" in text or "TorchEngine(" in text
        if builds:
            assert module == "inference.engines.choice", f"{module} builds an engine"
        if part_of(module) not in ("engines", "loading"):
            assert 'backend == "openvino"' not in text and "plan.backend" not in text, module


def test_no_function_over_60_lines():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long
