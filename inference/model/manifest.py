"""sha256 manifest of a model folder: written at import, checked by the predictor at load.

Kept separate from `inference.weights` (the import tool) so the predictor's hot path imports only this.
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Callable

from inference import InferenceError
from inference.files.atomic import write_json

MANIFEST_NAME = "manifest.json"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(model_dir: Path, extra: dict | None = None) -> Path:
    """Record the sha256 of every file under `model_dir` (except the manifest itself)."""
    files = {p.relative_to(model_dir).as_posix(): sha256_of(p)
             for p in sorted(model_dir.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME}
    path = model_dir / MANIFEST_NAME
    write_json(path, {"algorithm": "sha256", "files": files, **(extra or {})})
    return path


def verify_files(model_dir: Path, relative_paths: list[str]) -> None:
    """Raise if the folder has a manifest and any of these files is unlisted or differs from it.

    Folders without a manifest (nnU-Net's own training output) are accepted as they are.
    """
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        return
    try:
        listed = json.loads(path.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InferenceError(f"{path}: unreadable manifest (expected JSON with a 'files' mapping)") from None
    for rel in relative_paths:
        if rel not in listed:
            raise InferenceError(f"{model_dir / rel}: not listed in {path}; re-import the model with "
                                 f"`python -m inference.weights import`")
        if sha256_of(model_dir / rel) != listed[rel]:
            raise InferenceError(f"{model_dir / rel}: sha256 differs from {path}: the file was changed "
                                 f"after import; refusing to load it")


def start_verifying(model_dir: Path, relative_paths: list[str]) -> Callable[[], None]:
    """verify_files in a background thread; the function returned waits for it and raises what
    verify_files raised (call it before the files' contents are used; it may be called again).

    Why a thread: every FLARE case starts a fresh process, and hashing the weights (the file reads and
    sha256 release the GIL) then overlaps reading the networks and starting their compile."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            verify_files(model_dir, relative_paths)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the caller by wait()
            outcome.append(e)

    thread = threading.Thread(target=run, name=f"verify {model_dir.name}")
    thread.start()

    def wait() -> None:
        thread.join()
        if outcome[0] is not None:
            raise outcome[0]
    return wait


def add_to_manifest(model_dir: Path, relative_paths: list[str]) -> None:
    """Record (or refresh) the sha256 of these files in an existing manifest, keeping its other entries."""
    path = model_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise InferenceError(f"{path}: missing or unreadable manifest") from None
    for rel in relative_paths:
        files[rel] = sha256_of(model_dir / rel)
    manifest["files"] = dict(sorted(files.items()))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)
