"""Wheels for the GPU machine: what our predictor's import chain needs there, downloaded on a networked
machine within what one device call may carry (64 MiB with the tree), installed there without network.

    python -m benchmarks.flare.gpu_check --prepare-wheels .whl [--with-nnunet]   (the command line lives there)
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import REPO

MIB = 2 ** 20
TRAVEL_LIMIT_BYTES = 64 * MIB          # what one device call may carry: tracked tree + carried paths
# Our predictor's import chain beyond what the GPU machine has (found by recording the modules that
# load_model + segment_array + nibabel I/O import; docs/gpu_check.md), and surface-distance for the evaluation
# package's Dice (benchmarks.common.dice) in the agreement step.
CORE_WHEELS = ("nnunetv2", "dynamic-network-architectures", "batchgenerators", "nibabel", "surface-distance")
# nnU-Net's own predictor additionally imports these (SimpleITK alone is a 52.8 MB wheel).
NNUNET_WHEELS = ("simpleitk", "acvl-utils", "blosc2", "ndindex", "numexpr", "imagecodecs")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def travelling_tree_bytes(repo: Path = REPO) -> tuple[int, int]:
    """(bytes, files) of what a device call sends: tracked files plus untracked files git does not ignore."""
    total = files = 0
    for args in (["ls-files", "-z"], ["ls-files", "-z", "--others", "--exclude-standard"]):
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout
        for name in filter(None, out.split(b"\0")):
            path = repo / os.fsdecode(name)
            if path.is_symlink() or path.is_file():
                total += path.lstat().st_size
                files += 1
    return total, files


def pinned(names: Sequence[str]) -> list[str]:
    """name==version as installed here (the versions the tests ran with), or the bare name if absent."""
    specs = []
    for name in names:
        try:
            specs.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            specs.append(name)
    return specs


SDIST_ONLY = ("acvl-utils", "surface-distance")   # pure Python, built into a wheel here (no wheel published, or none for cp312)


def pip_download(specs: Sequence[str], dest: Path, log=print) -> int:
    """pip download of cp312 manylinux x86_64 wheels (no dependencies: each one is named); the few
    pure-Python packages without a wheel are built with `pip wheel`."""
    built = [s for s in specs if s.split("==")[0] in SDIST_ONLY]
    binary = [s for s in specs if s not in built]
    cmds = [[sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
             "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest), *binary]]
    if built:
        cmds.append([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dest), *built])
    for cmd in cmds:
        log("$ " + " ".join(cmd))
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            return rc
    return 0


def prepare_wheels(dest: Path, with_nnunet: bool = False, log=print, download=pip_download) -> int:
    """Download the cp312 manylinux x86_64 wheels the GPU machine lacks into `dest`; refuse (exit 2,
    wheels removed) when they and the travelling tree exceed 64 MiB."""
    dest.mkdir(parents=True, exist_ok=True)
    names = CORE_WHEELS + (NNUNET_WHEELS if with_nnunet else ())
    if download(pinned(names), dest, log) != 0:
        log("error: pip download failed (network? a version without a cp312 manylinux wheel?)")
        return 2
    wheels = sorted(dest.glob("*.whl"))
    tree, n_files = travelling_tree_bytes()
    wheel_bytes = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        log(f"  {w.stat().st_size / MIB:8.2f} MiB  {w.name}")
    total = tree + wheel_bytes
    log(f"wheels {wheel_bytes / MIB:.2f} MiB + travelling tree {tree / MIB:.2f} MiB ({n_files} files) "
        f"= {total / MIB:.2f} MiB of the {TRAVEL_LIMIT_BYTES / MIB:.0f} MiB a device call may carry")
    if total > TRAVEL_LIMIT_BYTES:
        for w in wheels:
            w.unlink()
        log(f"error: {total / MIB:.2f} MiB exceeds {TRAVEL_LIMIT_BYTES / MIB:.0f} MiB; wheels removed"
            + (" (nnU-Net's predictor needs SimpleITK, 52.8 MB: drop --with-nnunet)" if with_nnunet else ""))
        return 2
    if not dest.resolve().is_relative_to(REPO):
        log(f"ok, but {dest} is outside the repository: only the checkout travels; use e.g. --prepare-wheels .whl")
        return 0
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(dest.resolve())]).returncode == 0
    log(f"ok: name '{os.path.relpath(dest.resolve(), REPO)}' in the device call's carry list"
        + ("" if ignored else "; it is NOT ignored by git, so it travels anyway (do not also carry it)"))
    return 0


def install_wheels(wheels: Path, site: Path) -> list[str]:
    """pip install --no-index --no-deps into `site` and put it on sys.path (after the machine's own
    packages, so a wheel never shadows a newer installed one); returns the wheel names."""
    found = sorted(wheels.glob("*.whl"))
    if not found:
        raise FileNotFoundError(f"{wheels}: no *.whl (make them with --prepare-wheels on a networked machine)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, found)], check=True)
    if str(site) not in sys.path:
        sys.path.append(str(site))
    importlib.invalidate_caches()
    return [w.name for w in found]
