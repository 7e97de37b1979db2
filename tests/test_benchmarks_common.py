"""benchmarks.common: the one machine name, the results header, and Dice with its one empty-mask rule."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import common


def test_slugs_name_a_machine_one_way(monkeypatch):
    monkeypatch.setattr(common, "cpu_name", lambda: "Intel(R) Xeon(R) CPU @ 2.20GHz")
    monkeypatch.setattr(common, "cpu_cores", lambda: 2)
    assert common.machine_slug() == "cpu-intel-xeon-2-cores"
    monkeypatch.setattr(common, "cpu_name", lambda: "AMD EPYC")
    assert common.machine_slug() == "cpu-amd-epyc-2-cores"
    assert common.machine_slug("NVIDIA H100 80GB HBM3") == "gpu-nvidia-h100-80gb-hbm3"
    assert common.results_dir("roi", "no_roi", root=common.REPO / "x") == common.REPO / "x/roi/cpu-amd-epyc-2-cores/no_roi"


def test_results_header_states_command_date_commit_machine_load(monkeypatch):
    monkeypatch.setattr(common, "load_average", lambda: (0.25, 0.5, 1.0))
    meta = common.run_metadata("python -m benchmarks.x --fast", load_before=(2.0, 1.0, 0.5))
    assert meta["command"] == "python -m benchmarks.x --fast"
    assert meta["load_before"] == [2.0, 1.0, 0.5] and meta["load_after"] == [0.25, 0.5, 1.0]
    assert meta["machine"]["slug"] == common.machine_slug() and meta["machine"]["gpu"] is None
    assert len(meta["commit"]) >= 12 and meta["date"].endswith(" UTC")
    text = common.metadata_markdown(meta)
    assert text.startswith("Command: `python -m benchmarks.x --fast`  \nDate: ")
    assert "load 2.00/1.00/0.50 before, 0.25/0.50/1.00 after" in text
    json.dumps(meta)   # a results file's JSON header


def test_command_line_quotes_what_needs_it():
    assert common.command_line("benchmarks.flare.table6", ["--cases", "a b"]) == \
        "python -m benchmarks.flare.table6 --cases 'a b'"


def test_dice_by_hand_and_the_empty_rule():
    a = np.array([[1, 1, 2, 0], [0, 0, 2, 2]])
    b = np.array([[1, 0, 2, 0], [0, 0, 2, 3]])
    d = common.dice_per_label(a, b, [1, 2, 3, 4])
    assert d == {1: pytest.approx(2 / 3), 2: pytest.approx(4 / 5), 3: 0.0, 4: 1.0}   # 4: in neither map
    assert common.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert common.dice_from_counts(1, 3) == pytest.approx(2 / 3) and common.dice_from_counts(0, 0) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        common.dice_per_label(a, b[:1], [1])


def test_write_text_table_writes_the_header_and_the_lines(tmp_path):
    out = common.write_text_table("phantoms_speed", "Phantom generation speed", ["a  1.00", "b  2.00"],
                                  ["--repeats", "1"], (0.5, 0.25, 0.125), tmp_path)
    text = out.read_text()
    assert out == tmp_path / "phantoms_speed.md"
    assert text.startswith("# Phantom generation speed\n\nCommand: `python -m benchmarks.studies.phantoms_speed --repeats 1`")
    assert "load 0.50/0.25/0.12 before" in text and text.endswith("```text\na  1.00\nb  2.00\n```\n")


def test_own_memory_mb_sees_this_process_grow_and_keeps_the_peak():
    import numpy as np

    from benchmarks.common import own_memory_mb
    rss_before, peak_before = own_memory_mb()
    block = np.ones(256 * 2 ** 20, dtype=np.uint8)        # 256 MiB, touched
    rss_during, peak_during = own_memory_mb()
    del block
    rss_after, peak_after = own_memory_mb()
    assert rss_during - rss_before > 200 and peak_during >= rss_during
    # the peak stays after the block is freed (the kernel's RSS counters are batched: within 1 MB)
    assert peak_after - rss_after > 200 and abs(peak_after - peak_during) < 1 and peak_during >= peak_before
