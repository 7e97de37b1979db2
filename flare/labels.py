"""FLARE 2024 Task 3 labels: ids, names, short CSV names and NSD tolerances (mm).

Source: the official Task 3 scorer (T2andT3_FLARE24_DSC_NSD_Eval.py) and docs/flare.md section 1.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Organ:
    label: int          # value in the label map
    name: str           # human-readable name (dataset.json uses it)
    short: str          # column prefix in the official CSV (e.g. "RK" -> "RK_DSC")
    nsd_tolerance_mm: float
    z_range_rule: bool  # scored only on the ground truth's axial range (aorta, IVC, esophagus)


ORGANS: tuple[Organ, ...] = (
    Organ(1, "liver", "Liver", 5, False),
    Organ(2, "right kidney", "RK", 3, False),
    Organ(3, "spleen", "Spleen", 3, False),
    Organ(4, "pancreas", "Pancreas", 5, False),
    Organ(5, "aorta", "Aorta", 2, True),
    Organ(6, "inferior vena cava", "IVC", 2, True),
    Organ(7, "right adrenal gland", "RAG", 2, False),
    Organ(8, "left adrenal gland", "LAG", 2, False),
    Organ(9, "gallbladder", "Gallbladder", 2, False),
    Organ(10, "esophagus", "Esophagus", 3, True),
    Organ(11, "stomach", "Stomach", 5, False),
    Organ(12, "duodenum", "Duodenum", 7, False),
    Organ(13, "left kidney", "LK", 3, False),
)

ORGAN_BY_LABEL = {o.label: o for o in ORGANS}
NUM_CLASSES = len(ORGANS) + 1  # background + 13 organs


def dataset_json_labels() -> dict[str, int]:
    """The `labels` entry of an nnU-Net v2 dataset.json for the FLARE organs."""
    labels = {"background": 0}
    labels.update({o.name.replace(" ", "_"): o.label for o in ORGANS})
    return labels


def csv_columns() -> list[str]:
    """Column names of the official scorer's CSV, in order."""
    return (["Name"] + [f"{o.short}_DSC" for o in ORGANS] + [f"{o.short}_NSD" for o in ORGANS])
