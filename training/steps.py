"""The step runner shared by the training recipes (training/default_model.py,
labeltransfer/toy_reproduction.py).

A recipe is an ordered table of named steps, each a function of no arguments (a closure over the
recipe's settings). `--steps a,b` picks a subset; the steps always run in the table's order, each one
logged with its duration, so a recipe can be resumed or redone step by step.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

StepTable = Mapping[str, Callable[[], Any]]


def parse_steps(text: str, names: Iterable[str]) -> list[str]:
    """The steps named in a comma list, checked against `names`; ValueError names the unknown ones."""
    names = list(names)
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in names]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; choose from {', '.join(names)}")
    if not chosen:
        raise ValueError(f"no step chosen; choose from {', '.join(names)}")
    return chosen


def run_steps(table: StepTable, chosen: Iterable[str], log: Callable[[str], None] = print,
              on_done: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """Run the chosen steps of `table` in the table's order; returns {step: what it returned}.

    on_done(step, seconds) is called after each step (e.g. to record its time on disk).
    """
    chosen = set(chosen)
    results = {}
    for name, step in table.items():
        if name not in chosen:
            continue
        t0 = time.perf_counter()
        log(f"== {name}")
        results[name] = step()
        seconds = time.perf_counter() - t0
        log(f"== {name} done in {seconds / 60:.1f} min")
        if on_done:
            on_done(name, seconds)
    return results
