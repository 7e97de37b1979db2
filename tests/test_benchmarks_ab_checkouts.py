"""benchmarks.studies.ab_checkouts on real checkouts: this one against a clone of itself, one round.
The same code on the same cases must give the same labels; the table and the JSON name both commits."""
from __future__ import annotations

import json
import subprocess

from benchmarks.common import REPO
from benchmarks.studies.ab_checkouts import main


def test_a_checkout_against_its_clone_gives_equal_labels(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    # the clone has no weights/ changes of its own: both runs read this checkout's weights/
    assert main(["--before", str(clone), "--after", str(REPO), "--rounds", "1", "--name", "self",
                 "-o", str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 0
    record = json.loads((tmp_path / "out" / "self.json").read_text())
    assert record["checkouts"]["before"] == head
    differing = record["differing_voxels_before_after"]
    assert len(differing) == 4 and set(differing.values()) == {0}      # the compare case and 3 samples
    assert [r["config"] for r in record["runs"]] == ["before", "after"]
    assert all(r["stages_s"]["network"] > 0 and r["peak_rss_mib"] > 0 for r in record["runs"])
    table = (tmp_path / "out" / "self.md").read_text()
    assert f"# commit {head} vs commit" in table and "| before |" in table and "| after |" in table
