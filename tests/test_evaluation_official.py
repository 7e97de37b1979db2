"""`evaluation` against the organisers' own numbers: tests/data/official_scores/official.csv holds the
output of the FLARE 2024 Task 3 scorer (JunMa11/FLARE, run outside the repository; see the README
there) on four committed label pairs. Every rounded DSC and NSD must be equal."""
from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest

from evaluation import score_case
from flare.labels import csv_columns
from _official_pairs import CASES, DATA, SAMPLE_LABELS, ground_truth, prediction


def _official_rows() -> dict[str, dict[str, float]]:
    with open(DATA / "official.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == csv_columns()
        return {row["Name"]: {k: float(v) for k, v in row.items() if k != "Name"} for row in reader}


def _gt_path(name: str):
    extra = DATA / "gt" / name
    return extra if extra.exists() else SAMPLE_LABELS / name


def test_official_csv_covers_every_pair():
    assert sorted(_official_rows()) == sorted(CASES)


@pytest.mark.parametrize("name", CASES)
def test_scores_equal_the_organisers_scorer(name):
    official = _official_rows()[name]
    ours = score_case(DATA / "pred" / name, _gt_path(name))
    assert list(ours) == list(official)
    differ = {k: (ours[k], official[k]) for k in official
              if not (ours[k] == official[k] or (math.isnan(ours[k]) and math.isnan(official[k])))}
    assert not differ


def test_pairs_reach_the_scorer_rules():
    """The pairs are only worth comparing if they exercise the rules: check the CSV has perfect, partial,
    missed (0/0) and DSC-below-0.2 organs, and an axial-range organ scored on a cut slab."""
    rows = _official_rows()
    values = [v for row in rows.values() for v in row.values()]
    assert 1.0 in values and 0.0 in values and any(0.2 < v < 1.0 for v in values)
    assert rows["phantom_0001.nii.gz"]["Gallbladder_DSC"] == 0.0        # left out of the prediction
    assert rows["phantom_0004.nii.gz"]["RAG_DSC"] == 0.0                # only in the prediction
    assert rows["phantom_0002.nii.gz"]["Aorta_DSC"] == 1.0              # extra slices outside the slab
    assert rows["phantom_0002.nii.gz"]["LAG_NSD"] == 0.0                # DSC under 0.2


@pytest.mark.parametrize("name", CASES)
def test_committed_pairs_are_what_the_generator_makes(name):
    """The committed predictions are reproducible from the samples (python -m tests._official_pairs)."""
    committed = np.asarray(nib.load(str(DATA / "pred" / name)).dataobj)
    assert np.array_equal(committed, prediction(name))
    gt_committed = np.asarray(nib.load(str(_gt_path(name))).dataobj)
    assert np.array_equal(gt_committed, ground_truth(name)[0])
