"""Tissue classes of the phantom and their mean intensity in each modality.

The label map says which FLARE organ a voxel belongs to; the tissue map says what it is made of (an
organ may hold several tissues: kidney cortex and medulla, stomach wall, content and gas), and the
image intensity comes from the tissue. CT values are HU (portal-venous phase); MRI values are
arbitrary units before the per-case gain, chosen so that each sequence has its own ordering of organs:
T1 (fat bright, fluid dark), T2 with partial fat suppression (fluid bright, liver dark), T1
contrast-enhanced fat-suppressed (vessels and kidney cortex bright), DWI-like with fat suppression
(spleen, kidney, bowel wall bright; vessels and fluid dimmer; low SNR). Values were tuned so that every
organ differs from its immediate surroundings in every sequence (a learnable target), while organs
may share intensities with each other, as in real MRI.
"""
from __future__ import annotations

import numpy as np

# name: (CT HU, T1, T2, T1c, DWI, texture amplitude (fraction of the MRI mean; x 40 HU in CT))
_TABLE: dict[str, tuple[float, float, float, float, float, float]] = {
    "air":             (-1000,   0,    0,    0,    0,  0.00),
    "subcut_fat":      (-105,  900,  420,  120,   25,  0.03),
    "visceral_fat":    (-95,   870,  400,  115,   25,  0.05),
    "muscle":          (55,    280,  170,  310,  110,  0.04),
    "bone_cortex":     (900,    40,   40,   40,   20,  0.05),
    "bone_marrow":     (260,   540,  330,  190,   90,  0.08),
    "disc":            (90,    250,  460,  200,   80,  0.04),
    "csf":             (10,    110,  950,   90,   70,  0.02),
    "lung":            (-850,   25,   30,   25,   10,  0.20),
    "heart":           (150,   270,  130,  700,   90,  0.06),
    "bowel":           (30,    200,  400,  340,  260,  0.15),
    "colon":           (25,    300,  330,  240,  160,  0.15),
    "gas":             (-950,   10,   10,   10,    5,  0.10),
    "liver":           (105,   470,  230,  560,  210,  0.04),
    "liver_vessel":    (165,   160,  140,  760,   70,  0.05),
    "kidney_cortex":   (175,   390,  470,  830,  430,  0.04),
    "kidney_medulla":  (115,   250,  600,  520,  380,  0.05),
    "renal_sinus":     (-70,   820,  380,  160,   30,  0.08),
    "spleen":          (120,   330,  570,  610,  540,  0.03),
    "pancreas":        (95,    540,  280,  500,  340,  0.06),
    "artery":          (175,   100,   60,  880,   90,  0.03),
    "vein":            (145,   140,   90,  730,  110,  0.04),
    "adrenal":         (70,    300,  260,  470,  270,  0.05),
    "bile":            (10,    110,  980,   90,  120,  0.02),
    "esophagus":       (45,    260,  220,  390,  230,  0.05),
    "stomach_wall":    (80,    300,  250,  540,  290,  0.04),
    "stomach_fluid":   (15,    140,  820,  130,  120,  0.05),
    "stomach_food":    (40,    330,  560,  220,  200,  0.15),
    "duodenum":        (50,    260,  560,  440,  330,  0.06),
}

TISSUES: tuple[str, ...] = tuple(_TABLE)
T = {name: i for i, name in enumerate(TISSUES)}      # tissue name -> id in the tissue map (uint8)
MODALITIES: tuple[str, ...] = ("ct", "t1", "t2", "t1c", "dwi")
MRI_MODALITIES: tuple[str, ...] = ("t1", "t2", "t1c", "dwi")
_COLUMN = {"ct": 0, "t1": 1, "t2": 2, "t1c": 3, "dwi": 4}

#: Tissues whose intensity is not a soft organ's: an organ's fat gap never replaces them.
HARD_TISSUES = frozenset(T[n] for n in ("air", "subcut_fat", "visceral_fat", "muscle", "bone_cortex",
                                        "bone_marrow", "disc", "csf", "lung", "heart", "renal_sinus"))


def check_modality(modality: str) -> str:
    m = modality.lower()
    if m not in _COLUMN:
        raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
    return m


def mean_intensities(modality: str) -> np.ndarray:
    """(n_tissues,) float32: mean intensity of each tissue id in `modality` (HU for CT)."""
    col = _COLUMN[check_modality(modality)]
    return np.array([row[col] for row in _TABLE.values()], dtype=np.float32)


def texture_amplitudes(modality: str) -> np.ndarray:
    """(n_tissues,) float32: amplitude of the smooth within-tissue texture; fraction of the mean for
    MRI, HU for CT."""
    amp = np.array([row[5] for row in _TABLE.values()], dtype=np.float32)
    return amp * 40.0 if check_modality(modality) == "ct" else amp
