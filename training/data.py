"""Phantom data sets for training and held-out evaluation, written as nnU-Net v2 raw datasets.

A case is (case id, subject seed, modality). Subject seeds are plain integers: the training set uses
`range(train_seed, train_seed + n)`, the held-out set `range(heldout_seed, heldout_seed + n)`, and
`check_disjoint` refuses overlapping ranges, so a held-out subject is never seen in training. Grids
(spacing, field of view, orientation, motion) are drawn by the phantom generator from its per-modality
acquisition presets, the same way the sample cases are made.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from flare.labels import dataset_json_labels

SUFFIX = ".nii.gz"


@dataclass(frozen=True)
class PhantomCase:
    case_id: str
    seed: int        # subject seed of phantoms.generate_case
    modality: str    # "ct", "t1", "t2", "t1c" or "dwi"


def plan_cases(n: int, first_seed: int, modalities, prefix: str) -> list[PhantomCase]:
    """n cases with subject seeds first_seed .. first_seed + n - 1; case i is imaged in
    modalities[i % len(modalities)]. Case ids: <prefix>_<seed>_<modality>."""
    modalities = [m.strip().lower() for m in (modalities.split(",") if isinstance(modalities, str)
                                               else modalities) if m.strip()]
    if not modalities:
        raise ValueError("no modality given")
    if n < 1:
        raise ValueError(f"need at least one case, got n={n}")
    return [PhantomCase(f"{prefix}_{first_seed + i:05d}_{modalities[i % len(modalities)]}", first_seed + i,
                        modalities[i % len(modalities)]) for i in range(n)]


def check_disjoint(a: list[PhantomCase], b: list[PhantomCase]) -> None:
    """Raise ValueError if the two case lists share a subject seed."""
    shared = sorted({c.seed for c in a} & {c.seed for c in b})
    if shared:
        raise ValueError(f"training and held-out sets share subject seeds {shared[:10]}"
                         f"{' ...' if len(shared) > 10 else ''}; choose non-overlapping seed ranges")


def _atomic_write(image, path: str) -> None:
    import SimpleITK as sitk

    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=SUFFIX, dir=os.path.dirname(path))
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_case(out_dir: str, case: PhantomCase, subset: str = "Tr", **options) -> None:
    """Write images<subset>/<id>_0000.nii.gz and labels<subset>/<id>.nii.gz (skipped if both exist).
    options: geometry keywords of phantoms.generate_case (e.g. spacing); default: drawn from presets."""
    from phantoms import generate_case

    img_path = os.path.join(out_dir, f"images{subset}", f"{case.case_id}_0000{SUFFIX}")
    lab_path = os.path.join(out_dir, f"labels{subset}", f"{case.case_id}{SUFFIX}")
    if os.path.isfile(img_path) and os.path.isfile(lab_path):
        return
    image, label = generate_case(case.seed, case.modality, **options)
    os.makedirs(os.path.dirname(img_path), exist_ok=True)
    os.makedirs(os.path.dirname(lab_path), exist_ok=True)
    _atomic_write(image, img_path)
    _atomic_write(label, lab_path)


def _job(args) -> str:
    out_dir, case, subset, options = args
    write_case(out_dir, case, subset, **options)
    return case.case_id


def write_cases(out_dir: str, cases: list[PhantomCase], subset: str = "Tr", workers: int = 1,
                progress: bool = True, **options) -> None:
    """Write all cases (in parallel with `workers` processes), printing progress on stderr; options go
    to write_case."""
    jobs = [(out_dir, c, subset, options) for c in cases]
    t0 = time.time()
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for i, cid in enumerate(pool.map(_job, jobs), 1):
                _progress(progress, i, len(jobs), cid, t0)
    else:
        for i, job in enumerate(jobs, 1):
            _progress(progress, i, len(jobs), _job(job), t0)


def _progress(on: bool, i: int, n: int, cid: str, t0: float) -> None:
    if on:
        print(f"  [{i}/{n}] {cid} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)


def write_dataset_json(out_dir: str, num_training: int, name: str, description: str) -> None:
    """nnU-Net v2 dataset.json with one channel named "MRI" (nnU-Net then z-scores every image,
    CT included, as the method paper does) and the FLARE labels."""
    content = {
        "name": name,
        "description": description,
        "channel_names": {"0": "MRI"},
        "labels": dataset_json_labels(),
        "numTraining": num_training,
        "file_ending": SUFFIX,
    }
    with open(os.path.join(out_dir, "dataset.json"), "w") as f:
        json.dump(content, f, indent=2)
        f.write("\n")
