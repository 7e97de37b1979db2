"""benchmarks.report: every generated number in the docs equals what its results file gives, and a
changed results file makes the check fail."""
from __future__ import annotations

import json
import shutil

import benchmarks.report as report
from benchmarks.common import REPO


def test_docs_match_their_results_files():
    stale = [p.relative_to(REPO).as_posix() for p in report.stale()]
    assert stale == [], f"run `python -m benchmarks.report`: {stale} differ from their results files"


def test_a_changed_result_fails_the_check(tmp_path, monkeypatch):
    found = report.find("compare_nnunet")
    assert found is not None
    path, data = found
    data["medians"][report.NNUNET]["to_file_s"]["median"] = 123.456
    copy = tmp_path / path.relative_to(REPO)
    copy.parent.mkdir(parents=True)
    copy.write_text(json.dumps(data))
    summary_before = report.summary_block()
    monkeypatch.setattr(report, "find", lambda key, root=tmp_path, _find=report.find: _find(key, tmp_path)
                        if key == "compare_nnunet" else _find(key))
    summary_after = report.summary_block()
    assert "123.46 s" in summary_after and "123.46 s" not in summary_before
    readme = (REPO / "README.md").read_text()
    assert report.render_blocks(readme) != readme


def test_a_missing_result_names_its_command(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "find", lambda key, root=None: None)
    text = report.summary_block()
    assert "not measured yet: `python -m benchmarks.report --regenerate --only image_sizes_cpu`" in text


def test_blocks_are_replaced_between_their_markers():
    text = "before\n<!-- results:venv -->\nold 9.9 GB\n<!-- /results:venv -->\nafter\n"
    out = report.render_blocks(text)
    assert out.startswith("before\n<!-- results:venv -->\n") and out.endswith("<!-- /results:venv -->\nafter\n")
    assert "old 9.9 GB" not in out and out.count("<!-- results:venv -->") == 1


def test_results_index_lists_every_file_with_its_header(tmp_path):
    root = tmp_path / "results"
    (root / "demo" / "cpu-x").mkdir(parents=True)
    meta = {"command": "python -m demo", "date": "2026-12-05 10:00 UTC", "commit": "abc123",
            "machine": {"cpu": "X", "cores": 2, "gpu": None, "slug": "cpu-x-2-cores"},
            "load_before": [0.5, 0.4, 0.3], "load_after": [0.6, 0.4, 0.3]}
    (root / "demo" / "cpu-x" / "r.json").write_text(json.dumps({"metadata": meta}))
    (root / "demo" / "cpu-x" / "old.json").write_text(json.dumps({"value": 1}))
    page = report.index_page(root)
    assert "| [demo/cpu-x/r.json](demo/cpu-x/r.json) | python -m demo | 2026-12-05 10:00 UTC | abc123 | X, 2 cores | 0.50/0.40/0.30 |" in page
    assert "| [demo/cpu-x/old.json](demo/cpu-x/old.json) | - | - | - | - | - |" in page
    shutil.rmtree(root)


def test_readme_is_a_short_product_page_with_two_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    setup = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    block = setup.split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in block.splitlines()] == ["bash docker/demo.sh", "bash .ci/run"]
    assert "torchvision" not in setup
    assert "## Layout\n\n[docs/architecture.md](docs/architecture.md)" in readme


def test_regenerate_runs_the_sources_in_order_and_says_which_failed():
    ran = []
    failed = report.regenerate(run=lambda command: ran.append(command) or (1 if "path_agreement --no-roi" in command else 0))
    assert ran == [s.command for s in report.SOURCES if s.regenerate]
    assert failed == ["path_agreement_no_roi"]
    assert "training.default_model" not in " ".join(ran)   # retraining the shipped model only when named
    ran.clear()
    assert report.regenerate(["default_model"], run=lambda command: ran.append(command) or 0) == []
    assert ran == [report.SOURCE["default_model"].command]


def test_roi_blocks_count_and_name_the_cases_whose_localiser_was_not_run(monkeypatch):
    path, data = report.find("roi")
    rows = data["rows"]
    large = [r for r in rows if r["set"] == "large"]
    compare = next(r for r in rows if r["set"] == "compare")
    for r in large[:1] + [compare]:
        r["decision"]["localizer_run"] = True
    for r in large[1:]:
        r["decision"]["localizer_run"] = False
    monkeypatch.setattr(report, "find", lambda key, root=None: (path, data) if key == "roi" else None)
    assert f"localiser run by the default: 1 of {len(large)}" in report.roi_block()
    assert "localiser not run" not in report.roi_compare_block()
    compare["decision"]["localizer_run"] = False
    assert "localiser not run" in report.roi_compare_block()


def test_container_startup_block_shows_the_critical_chain_only_where_measured(monkeypatch):
    path, data = report.find("container_startup")
    summary = dict(data["summary"])
    for key in ("chain", "gap_floor"):
        summary.pop(key, None)
    monkeypatch.setattr(report, "find", lambda key, root=None: (path, {**data, "summary": summary}))
    assert "critical chain" not in report.container_startup_block()     # an older file: no chain rows
    summary["chain"] = {"wall": 0.3712, "numpy": 0.061, "openvino": 0.042, "predictor_imports": 0.021,
                        "model_load": 0.025, "compile_wait": 0.094}
    summary["gap_floor"] = 0.3456
    text = report.container_startup_block()
    assert "| critical chain: a container that only gets the model ready for its first tile | 0.37 s |" in text
    assert "| 0.06, 0.04, 0.02, 0.03, 0.09 |" in text and "**0.35 s**" in text
