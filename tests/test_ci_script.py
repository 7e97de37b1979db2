""".ci/run refuses to start a clean install on a nearly full disk, with a message that says so (the
install would otherwise die half-way inside pip with ENOSPC)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _fake_df(bin_dir: Path, free_kib: int) -> None:
    """A `df` that reports `free_kib` available on /work/fake in POSIX (-P) format."""
    bin_dir.mkdir()
    script = bin_dir / "df"
    script.write_text("#!/bin/sh\n"
                      "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
                      f"echo '/dev/fake 100000000 1 {free_kib} 1% /work/fake'\n")
    script.chmod(0o755)


def test_ci_run_stops_before_installing_on_a_nearly_full_disk(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    for script in ("run", "venv.sh"):
        shutil.copy(ROOT / ".ci" / script, repo / ".ci" / script)
    _fake_df(tmp_path / "bin", free_kib=3 * 1024 * 1024)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert "only 3 GB free on /work/fake" in r.stderr and "about 10 GB" in r.stderr
    assert not (repo / ".venv").exists()                     # nothing half-installed
