"""Phantom data sets for training and held-out evaluation, written as nnU-Net v2 raw datasets.

A case is (case id, subject seed, modality, grid family). Subject seeds are plain integers: the
training set uses `range(train_seed, train_seed + n)`, the held-out set `range(heldout_seed,
heldout_seed + n)`, and `check_disjoint` refuses overlapping ranges (and the sample cases' subjects),
so a held-out subject is never seen in training. Grids (spacing, field of view, orientation, motion)
are drawn by the phantom generator, from its acquisition presets or from coarse ranges like those of
the sample cases (see GEOMETRIES). Files are written with phantoms' own dataset writer.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from flare.labels import dataset_json_labels
from inference.files.atomic import write_json

SUFFIX = ".nii.gz"


#: Grid families (keyword options of phantoms.generate_case). "preset": spacing, field of view and
#: orientation drawn from the generator's per-modality acquisition presets (in-plane 0.6-2 mm, as
#: clinical scans). "coarse": in-plane 1.8-3.0 mm and slices 3.5-6.5 mm, orientation still drawn - the
#: kind of grid the committed sample cases (samples/) have.
GEOMETRIES: dict[str, dict] = {
    "preset": {},
    "coarse": {"inplane_range": (1.8, 3.0), "slice_range": (3.5, 6.5)},
    # chest to pelvis with much air around the body (phantoms' field="large"), on a coarse grid
    "large": {"field": "large", "inplane_range": (2.5, 4.0), "slice_range": (4.0, 8.0)},
}


@dataclass(frozen=True)
class PhantomCase:
    case_id: str
    seed: int        # subject seed of phantoms.generate_case
    modality: str    # "ct", "t1", "t2", "t1c" or "dwi"
    geometry: str = "preset"   # a key of GEOMETRIES


def _names(value) -> list[str]:
    return [m.strip().lower() for m in (value.split(",") if isinstance(value, str) else value) if m.strip()]


def plan_cases(n: int, first_seed: int, modalities, prefix: str, geometries="preset") -> list[PhantomCase]:
    """n cases with subject seeds first_seed .. first_seed + n - 1; case i is imaged in
    modalities[i % len(modalities)] on a grid of family geometries[i % len(geometries)]. Case ids:
    <prefix>_<seed>_<modality>."""
    modalities, geometries = _names(modalities), _names(geometries)
    if not modalities:
        raise ValueError("no modality given")
    unknown = [g for g in geometries if g not in GEOMETRIES]
    if unknown or not geometries:
        raise ValueError(f"unknown geometry {unknown or geometries}; choose from {', '.join(GEOMETRIES)}")
    if n < 1:
        raise ValueError(f"need at least one case, got n={n}")
    cases = []
    for i in range(n):
        m = modalities[i % len(modalities)]
        cases.append(PhantomCase(f"{prefix}_{first_seed + i:05d}_{m}", first_seed + i, m,
                                 geometries[i % len(geometries)]))
    return cases


def sample_seeds() -> set[int]:
    """Subject seeds of the committed sample cases (phantoms.samples)."""
    from phantoms.samples import SAMPLES
    return {int(seed) for _, seed, _, _ in SAMPLES}


def check_disjoint(a: list[PhantomCase], b) -> None:
    """Raise ValueError if case list `a` shares a subject seed with `b` (cases or plain seeds)."""
    seeds_b = {c.seed if isinstance(c, PhantomCase) else int(c) for c in b}
    shared = sorted({c.seed for c in a} & seeds_b)
    if shared:
        raise ValueError(f"subject seeds {shared[:10]}{' ...' if len(shared) > 10 else ''} are in both sets; "
                         f"choose non-overlapping seed ranges")


def write_case(out_dir: str, case: PhantomCase, subset: str = "Tr", **options) -> None:
    """Write images<subset>/<id>_0000.nii.gz and labels<subset>/<id>.nii.gz with phantoms' dataset
    writer (skipped if both exist). options replace the case's grid family (e.g. a fixed spacing)."""
    from phantoms.dataset import write_case as phantom_write_case

    img_path = os.path.join(out_dir, f"images{subset}", f"{case.case_id}_0000{SUFFIX}")
    lab_path = os.path.join(out_dir, f"labels{subset}", f"{case.case_id}{SUFFIX}")
    if os.path.isfile(img_path) and os.path.isfile(lab_path):
        return
    phantom_write_case(out_dir, case.case_id, case.seed, case.modality, subset,
                       **(options or GEOMETRIES[case.geometry]))


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
    write_json(os.path.join(out_dir, "dataset.json"), content)
