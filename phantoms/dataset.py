"""Writing phantoms as an nnU-Net v2 raw dataset.

Layout (nnU-Net's raw format, FLARE file names):
    OUT/imagesTr/<case>_0000.nii.gz   image (int16; HU for CT)
    OUT/labelsTr/<case>.nii.gz        FLARE labels 0..13 (uint8), same grid
    OUT/dataset.json                  channel_names, labels (flare.labels), numTraining, file_ending
With subset="Ts" the files go to imagesTs/labelsTs. Every file is written to a temporary name and
renamed, so an interrupted run never leaves a partial case.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from flare.labels import dataset_json_labels
from inference.files.atomic import atomic_output, write_json

from .generate import generate_case
from .tissues import check_modality

SUFFIX = ".nii.gz"


def subject_seed(seed: int, index: int) -> int:
    """Seed of the index-th subject of a dataset drawn with `seed` (distinct, deterministic)."""
    return int(np.random.SeedSequence([int(seed), int(index), 0xDA7A]).generate_state(1)[0])


def _atomic_write(image, path: str) -> None:
    import SimpleITK as sitk

    with atomic_output(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def write_case(out_dir: str, case_id: str, seed: int, modality: str, subset: str = "Tr",
               **options) -> tuple[str, str]:
    """Generate one case and write <out_dir>/images<subset>/<case_id>_0000.nii.gz and
    labels<subset>/<case_id>.nii.gz. Returns the two paths."""
    img, lab = generate_case(seed, modality, **options)
    img_dir = os.path.join(out_dir, f"images{subset}")
    lab_dir = os.path.join(out_dir, f"labels{subset}")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lab_dir, exist_ok=True)
    img_path = os.path.join(img_dir, f"{case_id}_0000{SUFFIX}")
    lab_path = os.path.join(lab_dir, f"{case_id}{SUFFIX}")
    _atomic_write(img, img_path)
    _atomic_write(lab, lab_path)
    return img_path, lab_path


def _job(args):
    out_dir, case_id, seed, modality, subset, options = args
    write_case(out_dir, case_id, seed, modality, subset, **options)
    return case_id


def plan_cases(n: int, modalities, seed: int, all_sequences: bool = False, first: int = 1,
               prefix: str = "phantom") -> list[tuple[str, int, str]]:
    """[(case id, subject seed, modality)]. Without all_sequences, subject i is imaged in
    modalities[i % len]; with it, every subject is imaged in every modality (case ids get the
    modality as suffix: phantom_0001_t1, phantom_0001_t2, ...)."""
    if isinstance(modalities, str):
        modalities = [m for m in modalities.split(",") if m]
    modalities = [check_modality(m) for m in modalities]
    if not modalities:
        raise ValueError("no modality given")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cases = []
    for i in range(n):
        s = subject_seed(seed, first + i)
        base = f"{prefix}_{first + i:04d}"
        if all_sequences:
            cases += [(f"{base}_{m}", s, m) for m in modalities]
        else:
            cases.append((base, s, modalities[i % len(modalities)]))
    return cases


def write_dataset_json(out_dir: str, modalities, name: str = "FLAREPhantoms",
                       description: str | None = None) -> str:
    """(Re)write dataset.json; numTraining counts the cases present in imagesTr. The channel is named
    "CT" when every modality is CT (nnU-Net then uses CT normalisation), else "MRI" (z-score)."""
    if isinstance(modalities, str):
        modalities = [m for m in modalities.split(",") if m]
    mods = sorted({check_modality(m) for m in modalities})
    img_dir = os.path.join(out_dir, "imagesTr")
    n = len([f for f in os.listdir(img_dir) if f.endswith("_0000" + SUFFIX)]) if os.path.isdir(img_dir) else 0
    content = {
        "name": name,
        "description": description or f"Synthetic abdominal phantoms ({', '.join(mods)}) with the 13 FLARE "
                                      f"labels, made by `python -m phantoms`",
        "channel_names": {"0": "CT" if mods == ["ct"] else "MRI"},
        "labels": dataset_json_labels(),
        "numTraining": n,
        "file_ending": SUFFIX,
        "modalities_generated": mods,
    }
    path = os.path.join(out_dir, "dataset.json")
    write_json(path, content)
    return path


def write_dataset(out_dir: str | os.PathLike, n: int, modalities="t1", seed: int = 0, *,
                  all_sequences: bool = False, first: int = 1, prefix: str = "phantom", subset: str = "Tr",
                  name: str = "FLAREPhantoms", workers: int = 1, progress: bool = True,
                  **options) -> list[str]:
    """Write n subjects as an nnU-Net raw dataset and return the case ids.

    modalities: one name, a comma list or a list ("ct", "t1", "t2", "t1c", "dwi"); subject i uses
    modalities[i % len] unless all_sequences (every subject in every modality, sharing anatomy).
    seed: dataset seed (subject seeds derive from it and the case number, so `first` lets a second call
    add distinct subjects). subset: "Tr" or "Ts". options: passed to generate_case (spacing,
    inplane_range, slice_range, size, direction, variation, motion, ...).
    """
    out_dir = os.fspath(out_dir)
    if subset not in ("Tr", "Ts"):
        raise ValueError(f"subset must be 'Tr' or 'Ts', got {subset!r}")
    cases = plan_cases(n, modalities, seed, all_sequences, first, prefix)
    os.makedirs(out_dir, exist_ok=True)
    jobs = [(out_dir, cid, s, m, subset, options) for cid, s, m in cases]
    t0 = time.time()
    done = []
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for cid in pool.map(_job, jobs):
                done.append(cid)
                _progress(progress, len(done), len(jobs), cid, t0)
    else:
        for job in jobs:
            done.append(_job(job))
            _progress(progress, len(done), len(jobs), done[-1], t0)
    write_dataset_json(out_dir, sorted({m for _, _, m in cases}), name=name)
    return done


def _progress(on: bool, i: int, n: int, cid: str, t0: float) -> None:
    if on:
        print(f"[{i}/{n}] {cid}  ({time.time() - t0:.1f} s)", file=sys.stderr, flush=True)
