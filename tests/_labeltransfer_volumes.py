"""Small synthetic subjects for the label-transfer tests: ellipsoid organs in physical space, imaged
as "CT" and as two MRI sequences with different intensity maps and a small motion between sequences.

Independent of the phantom generator (phantoms/), so the tests need no unmerged code. Sizes are tiny.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

# (label, centre (x, y, z) mm, radii (x, y, z) mm) in subject space; later entries win where they overlap.
ORGANS = [
    (1, (-22, 0, 0), (22, 18, 16)),     # liver
    (2, (-20, 22, -8), (7, 7, 9)),      # right kidney
    (3, (26, 10, 6), (10, 9, 9)),       # spleen
    (4, (6, -6, -4), (14, 5, 4)),       # pancreas
    (5, (4, 14, 0), (4, 4, 26)),        # aorta
    (6, (-6, 14, 0), (4, 4, 24)),       # IVC
    (7, (-14, 18, 8), (3, 3, 4)),       # right adrenal
    (8, (16, 18, 8), (3, 3, 4)),        # left adrenal
    (9, (-14, -14, -6), (5, 5, 6)),     # gallbladder
    (10, (2, 10, 20), (3, 3, 8)),       # esophagus
    (11, (18, -10, 8), (11, 9, 9)),     # stomach
    (12, (0, -14, -10), (10, 4, 5)),    # duodenum
    (13, (22, 22, -8), (7, 7, 9)),      # left kidney
]
BODY = ((0, 0, 0), (46, 34, 30))

# intensity per tissue: index 0 = outside body, 1 = body background, 2.. = organ label + 1
CT_MAP = np.array([-1000, 40, 60, 150, 50, 45, 200, 180, 30, 30, 10, 35, 20, 40, 150], float)
T1_MAP = np.array([0, 300, 520, 260, 330, 420, 120, 110, 280, 280, 90, 300, 200, 360, 260], float)
T2_MAP = np.array([0, 380, 120, 420, 260, 300, 60, 80, 240, 240, 700, 200, 340, 260, 420], float)


def rotation(deg_x: float = 0, deg_y: float = 0, deg_z: float = 0) -> np.ndarray:
    ax, ay, az = np.deg2rad([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_subject(modality: str = "CT", size=(48, 40, 24), spacing=(2.0, 2.0, 3.0), origin=None,
                 motion: np.ndarray | None = None, shift_mm=(0.0, 0.0, 0.0), seed: int = 0,
                 noise: float = 0.03, organs=ORGANS) -> tuple[sitk.Image, sitk.Image]:
    """(image, label) of one synthetic acquisition; size/spacing/origin in SimpleITK (x, y, z) order.

    A point p of the acquisition grid shows the subject at `motion @ p + shift_mm` (patient motion
    between sequences). Intensities: the modality's tissue map plus smooth multiplicative texture and
    Gaussian noise (fraction `noise` of the map's range).
    """
    size = tuple(int(s) for s in size)
    spacing = np.asarray(spacing, float)
    if origin is None:
        origin = -0.5 * (np.asarray(size) - 1) * spacing
    origin = np.asarray(origin, float)
    z, y, x = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    pts = np.stack([x, y, z], -1) * spacing + origin          # (Z, Y, X, 3) physical xyz
    if motion is not None:
        pts = pts @ np.asarray(motion, float).T
    pts = pts + np.asarray(shift_mm, float)

    def inside(c, r):
        return (((pts - np.asarray(c, float)) / np.asarray(r, float)) ** 2).sum(-1) <= 1.0

    tissue = np.zeros(size[::-1], np.int64)
    tissue[inside(*BODY)] = 1
    label = np.zeros(size[::-1], np.uint8)
    for lab, c, r in organs:
        m = inside(c, r) & (tissue > 0)
        label[m] = lab
        tissue[m] = lab + 1
    imap = {"CT": CT_MAP, "T1": T1_MAP, "T2": T2_MAP}[modality]
    rng = np.random.default_rng(seed)
    img = imap[tissue]
    texture = ndimage.gaussian_filter(rng.standard_normal(img.shape), 2.0)
    texture /= max(texture.std(), 1e-9)
    span = imap.max() - imap.min()
    img = img * (1 + 0.02 * texture * (tissue > 0)) + noise * span * rng.standard_normal(img.shape)

    def to_sitk(a, pixel):
        im = sitk.GetImageFromArray(a.astype(pixel))
        im.SetSpacing(tuple(float(s) for s in spacing))
        im.SetOrigin(tuple(float(o) for o in origin))
        return im

    return to_sitk(img, np.float32), to_sitk(label, np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice over all foreground labels together (a, b: label arrays)."""
    fa, fb = a > 0, b > 0
    inter = np.logical_and(fa, a == b).sum()  # overlap counts only where the labels agree
    return 2.0 * inter / max(fa.sum() + fb.sum(), 1)
