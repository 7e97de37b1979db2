"""training.steps: the one step runner of the training recipes."""
from __future__ import annotations

import pytest

from training.steps import parse_steps, run_steps


def test_parse_steps_checks_names():
    assert parse_steps(" train, data ", ["data", "train", "export"]) == ["train", "data"]
    with pytest.raises(ValueError, match=r"unknown step\(s\) \['trian'\]; choose from data, train"):
        parse_steps("data,trian", ["data", "train"])
    with pytest.raises(ValueError, match="no step chosen"):
        parse_steps(",", ["data"])


def test_run_steps_keeps_the_table_order_and_reports_each_step():
    ran, done, lines = [], [], []
    table = {name: (lambda name=name: ran.append(name) or name.upper()) for name in ("data", "plan", "train")}
    results = run_steps(table, ["train", "data"], log=lines.append, on_done=lambda s, sec: done.append(s))
    assert ran == ["data", "train"] and done == ["data", "train"]   # table order, not the order asked
    assert results == {"data": "DATA", "train": "TRAIN"}
    assert lines[0] == "== data" and lines[1].startswith("== data done in ") and lines[2] == "== train"

