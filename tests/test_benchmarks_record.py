"""benchmarks.record: a command's exit code, last lines, printed JSON result and path sizes, with the header."""
from __future__ import annotations

import json
import shlex
import sys

from benchmarks import record


def test_record_keeps_what_the_docs_render(tmp_path, capsys):
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "tree" / "sub" / "b.bin").write_bytes(b"y" * 234)
    script = "import json; [print(f'line {i}') for i in range(5)]; print(json.dumps({'ours_bytes': 7}))"
    rc = record.main(["demo", "--tail", "3", "--size", str(tmp_path / "tree"), "-o", str(tmp_path / "out"),
                      "--", sys.executable, "-c", script])
    assert rc == 0
    data = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert data["returncode"] == 0 and data["output_tail"] == ["line 3", "line 4", '{"ours_bytes": 7}']
    assert data["result"] == {"ours_bytes": 7}
    assert data["sizes_bytes"] == {str(tmp_path / "tree"): 1234}
    assert shlex.split(data["metadata"]["command"]) == [sys.executable, "-c", script]
    assert "line 0" in capsys.readouterr().out   # passed through as it came


def test_record_passes_the_exit_code_on(tmp_path):
    rc = record.main(["fails", "-o", str(tmp_path), "--", sys.executable, "-c", "print('no'); raise SystemExit(3)"])
    data = json.loads((tmp_path / "fails.json").read_text())
    assert rc == 3 and data["returncode"] == 3 and data["result"] is None and data["output_tail"] == ["no"]


def test_record_needs_a_command(capsys):
    assert record.main(["x"]) == 2 and "after --" in capsys.readouterr().err
