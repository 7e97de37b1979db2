"""The synthetic abdomen: one subject's organs, drawn from a seed, and how they are painted on a grid.

Anatomical frame (mm): x to the patient's left, y to posterior, z to superior (LPS axes), origin on the
midline at the level of the first lumbar vertebra (L1). Organ shapes are defined in a canonical frame;
a subject is the canonical anatomy with per-organ jitter of position, size and orientation, a body
habitus (scale per axis, subcutaneous fat thickness) and a smooth random deformation. Absent organs
(e.g. gallbladder after cholecystectomy) are drawn per subject.

Painting order decides contacts: body layers, thorax, bowel, muscles, then the FLARE organs (later ones
win where shapes meet, and each organ leaves a thin fat plane of `gap` mm to soft tissue around it),
the unlabelled vessels, intrahepatic vessels, and the skeleton last.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import Grid, rotation_matrix
from .shapes import Clipped, Ellipsoid, Minus, Shape, Tube, Union, ZTube
from .tissues import HARD_TISSUES, T

# FLARE label ids (flare/labels.py is the source of truth for names; ids are fixed by the challenge)
LIVER, RK, SPLEEN, PANCREAS, AORTA, IVC, RAG, LAG, GALLBLADDER, ESOPHAGUS, STOMACH, DUODENUM, LK = range(1, 14)

_HARD = np.zeros(256, dtype=bool)
_HARD[list(HARD_TISSUES)] = True


def _rz(deg: float) -> np.ndarray:
    return rotation_matrix((0, 0, 1), np.deg2rad(deg))


def _ry(deg: float) -> np.ndarray:
    return rotation_matrix((0, 1, 0), np.deg2rad(deg))


def _rx(deg: float) -> np.ndarray:
    return rotation_matrix((1, 0, 0), np.deg2rad(deg))


@dataclass
class Deformation:
    """Smooth displacement d(a) (mm) of anatomical points a: for each axis c a sum of plane waves
    amp * sin(k . a + phase). max_abs bounds |d_c| (sum of |amp|)."""
    amp: np.ndarray     # (3, K) mm
    k: np.ndarray       # (3, K, 3) rad/mm
    phase: np.ndarray   # (3, K) rad

    @property
    def max_abs(self) -> np.ndarray:
        return np.abs(self.amp).sum(axis=1)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        """a: (..., 3) -> (..., 3) displacement."""
        out = np.zeros_like(a, dtype=np.float64)
        for c in range(3):
            for j in range(self.amp.shape[1]):
                out[..., c] += self.amp[c, j] * np.sin(a @ self.k[c, j] + self.phase[c, j])
        return out


@dataclass
class Subject:
    """One synthetic person. `placement` is the scanner position (physical LPS mm) of the anatomical
    origin; `scale` multiplies the canonical anatomy per axis; `absent` holds FLARE labels missing in
    this subject."""
    seed: int
    placement: np.ndarray
    scale: np.ndarray
    fat_mm: float
    deformation: Deformation
    absent: frozenset
    params: dict = field(default_factory=dict)
    organs: dict = field(default_factory=dict)      # label -> Shape (canonical frame)
    extras: dict = field(default_factory=dict)      # name -> Shape (unlabelled structures)


def _clipped_normal(rng: np.random.Generator, sd: float, size=None) -> np.ndarray:
    return np.clip(rng.normal(0.0, sd, size=size), -2 * sd, 2 * sd)


def spine_y(z):
    """Canonical y (mm) of the vertebral body centre at height z: lumbar lordosis, thoracic kyphosis."""
    return np.interp(z, [-250.0, -120.0, 0.0, 120.0, 250.0], [52.0, 58.0, 66.0, 74.0, 78.0])


def make_subject(seed: int, variation: float = 1.0, absent=None,
                 p_no_gallbladder: float = 0.08) -> Subject:
    """Draw a subject from `seed` (deterministic). `variation` scales every random deviation from the
    canonical anatomy (0: the canonical phantom, 1: default). `absent`: FLARE labels to leave out, or
    None to draw (gallbladder absent with probability p_no_gallbladder)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA7]))
    v = float(variation)

    def jit(values, sd):
        values = np.asarray(values, dtype=np.float64)
        sd = np.asarray(sd, dtype=np.float64)
        return values + _clipped_normal(rng, 1.0, values.shape) * sd * v if v > 0 else values

    def rscale(sd=0.08):
        return float(np.exp(_clipped_normal(rng, sd * v))) if v > 0 else 1.0

    def rdeg(sd):
        return float(_clipped_normal(rng, sd * v)) if v > 0 else 0.0

    def wob(sd=0.12):
        if v <= 0:
            return None
        c = _clipped_normal(rng, sd * v, 6)
        total = np.abs(c).sum()
        return c * (0.7 / total) if total > 0.7 else c      # keep the shape in one piece

    placement = np.array([rng.uniform(-25, 25), rng.uniform(-40, 40), rng.uniform(-350, 350)])
    scale = np.exp(_clipped_normal(rng, 0.055 * v, 3)) if v > 0 else np.ones(3)
    fat_mm = float(np.clip(14.0 + 7.0 * v * rng.normal(), 5.0, 35.0))
    n_modes = 3
    lam = rng.uniform(150.0, 300.0, size=(3, n_modes))
    dirs = rng.normal(size=(3, n_modes, 3))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    deformation = Deformation(amp=_clipped_normal(rng, 1.6 * v, (3, n_modes)),
                              k=dirs * (2 * np.pi / lam)[..., None],
                              phase=rng.uniform(0, 2 * np.pi, size=(3, n_modes)))
    if absent is None:
        absent = {GALLBLADDER} if rng.random() < p_no_gallbladder else set()
    subj = Subject(int(seed), placement, scale, fat_mm, deformation, frozenset(int(a) for a in absent))

    # --- body, diaphragm -------------------------------------------------------------------------
    p = subj.params
    p["dome_right"] = float(jit(115.0, 6.0))
    p["dome_left"] = float(p["dome_right"] - 15.0 + _clipped_normal(rng, 4.0 * v))
    p["stomach_fluid"] = bool(rng.random() < 0.55)
    p["stomach_gas"] = float(rng.uniform(0.25, 0.75)) if rng.random() < 0.6 else 2.0  # 2: no gas
    p["esophagus_air"] = bool(rng.random() < 0.3)
    dome = _dome_fn(p["dome_right"], p["dome_left"])
    below_dome = lambda x, y, z, m: z < dome(x, y) - 4.0 + m          # noqa: E731
    in_cavity = lambda x, y, z, m: cavity_level(x, y, z, m) <= 1.0    # noqa: E731
    abdominal = lambda x, y, z, m: below_dome(x, y, z, m) & in_cavity(x, y, z, m)  # noqa: E731
    p["dome"] = dome

    o = subj.organs
    # --- liver: right lobe + left lobe, under the right dome ---------------------------------------
    right = Ellipsoid(jit([-68, 2, 42], 4), np.array([64, 75, 70]) * rscale(0.06), _ry(rdeg(5)) @ _rz(rdeg(5)),
                      wob())
    left = Ellipsoid(jit([5, -50, 62], 5), np.array([60, 30, 32]) * rscale(0.12), _rz(-15 + rdeg(8)), wob())
    o[LIVER] = Clipped(Union(right, left), abdominal)
    # --- spleen: crescent along the 10th rib -----------------------------------------------------
    sp_rot = _rz(30 + rdeg(8)) @ _rx(rdeg(6))
    sp = Ellipsoid(jit([86, 35, 50], 5), np.array([24, 46, 36]) * rscale(0.1), sp_rot, wob())
    bite = Ellipsoid(sp.center - 20 * sp.rot[:, 0], [14, 30, 28], sp.rot)
    o[SPLEEN] = Clipped(Minus(sp, bite), abdominal)
    # --- kidneys with renal sinus; adrenals above their upper poles -------------------------------
    kidneys = {}
    for lab, side, c in ((RK, -1, [-62, 56, -28]), (LK, +1, [63, 54, -8])):
        # hilum turned anteromedially (about z), upper pole tilted medially (about y)
        rot = _rz(side * (25 + rdeg(8))) @ _ry(-side * (15 + rdeg(5)))
        k = Ellipsoid(jit(c, [5, 4, 8]), np.array([25, 23, 52]) * rscale(0.07), rot, wob(0.08))
        medial = k.rot[:, 0] * np.sign(k.rot[0, 0] * -side)   # local axis 0, pointing to the midline
        sinus = Ellipsoid(k.center + 16 * medial, [12, 11, 24], k.rot)
        kidneys[lab] = (k, sinus)
        o[lab] = Clipped(Minus(k, sinus), in_cavity)
    subj.extras["kidney_parts"] = kidneys
    for lab, kid, off, rot_deg in ((RAG, RK, [8, -2, 20], 35), (LAG, LK, [-10, -14, 12], -35)):
        pole = kidneys[kid][0].point([0, 0, 1])
        c = jit(pole + np.array(off), 3.5)
        o[lab] = Ellipsoid(c, np.array([5.0, 13.0, 20.0]) * rscale(0.08), _rz(rot_deg + rdeg(10)) @ _ry(rdeg(8)),
                           wob(0.1))
    # --- vessels along the spine ------------------------------------------------------------------
    az = np.array([-125, -60, 0, 60, 100, 160, 260.0])
    ax_off = np.array([30, 31, 31, 30, 26, 16, 12.0])
    ar = np.array([9, 10, 10.5, 11, 11.8, 12.5, 13]) * rscale(0.07)
    az[0] += float(_clipped_normal(rng, 4 * v)) if v > 0 else 0.0     # bifurcation level
    o[AORTA] = ZTube(az,
                     jit([8, 10, 12, 14, 18, 26, 30], 2.0), spine_y(az) - ax_off, ar)
    iz = np.array([-135, -100, -40, 0, 50, 90, 112.0])
    ivc_scale = rscale(0.1)
    o[IVC] = ZTube(iz, jit([-14, -18, -22, -24, -28, -30, -28], 2.0), jit([30, 32, 33, 32, 26, 15, 8], 1.5),
                   np.array([9, 10, 12, 13, 13, 14, 14]) * ivc_scale, np.array([7, 8, 9, 9, 10, 11, 12]) * ivc_scale)
    # --- stomach (J shape), esophagus into its cardia, duodenum from its pylorus ------------------
    st_shift = jit(np.zeros(3), 4)
    st_pts = jit([[48, 12, 84], [55, 0, 62], [70, -18, 40], [58, -38, 8], [28, -58, -8], [2, -52, -10],
                  [-12, -42, -8]], 3) + st_shift
    st_r = np.array([28, 30, 28, 26, 19, 13, 10]) * rscale(0.1)
    stomach = Tube(st_pts, st_r)
    o[STOMACH] = Clipped(stomach, abdominal)
    subj.extras["stomach_tube"] = stomach
    fz = st_pts[0, 2]                                          # top of the fundus control point
    ez = np.array([fz - 12, fz, fz + 12, 110, 150, 200, 300.0])
    ecx = jit([42, 32, 20, 9, 4, 3, 2], 2.0)
    ecy = jit([8, 12, 18, 26, 36, 42, 45], 1.5)
    ecx[0], ecy[0] = st_pts[0, 0] - 6, st_pts[0, 1] - 4      # the lower end sits inside the cardia
    er = 8.5 * rscale(0.08)
    o[ESOPHAGUS] = ZTube(ez, ecx, ecy, er, er * 0.82)
    pa_shift = jit(np.zeros(3), 4)
    du_pts = jit([[-35, -32, -6], [-52, -18, -10], [-58, -8, -35], [-56, -4, -62], [-44, -4, -78],
                  [-15, -2, -84], [12, -6, -82], [26, -10, -64], [28, -18, -44]], 3) + pa_shift
    du_pts = np.vstack([st_pts[-1], du_pts])
    du_r = np.array([10, 12, 12, 12, 12, 11, 11, 11, 10, 10]) * rscale(0.08)
    o[DUODENUM] = Tube(du_pts, du_r)
    pa_pts = jit([[-22, 10, -38], [-32, -2, -22], [-8, -16, -8], [20, -12, 4], [50, 15, 18], [68, 30, 28]],
                 3) + pa_shift
    pa_r = np.array([9, 15, 10, 11, 10, 8]) * rscale(0.1)
    o[PANCREAS] = Tube(pa_pts, pa_r)
    # --- gallbladder under the liver ---------------------------------------------------------------
    gb_axis = np.array([0.15, -0.6, -0.78]) + _clipped_normal(rng, 0.1 * v, 3)
    gb_axis /= np.linalg.norm(gb_axis)
    gb_rot = _frame_with_z(gb_axis)
    o[GALLBLADDER] = Ellipsoid(jit([-55, -52, 2], 4), np.array([14, 14, 34]) * rscale(0.12), gb_rot, wob(0.1))

    # --- unlabelled structures ----------------------------------------------------------------------
    e = subj.extras
    e["psoas"] = [ZTube([-250, -150, -60, 0, 25], s * np.array([48, 45, 38, 32, 28]), [48, 56, 62, 62, 62],
                        np.array([24, 22, 15, 8, 4]) * rscale(0.1)) for s in (-1, 1)]
    e["heart"] = Ellipsoid(jit([12, -28, 150], 5), [62, 50, 55], _rz(-20 + rdeg(5)))
    e["colon"] = Tube(jit([[-92, -25, -125], [-100, 0, -85], [-100, -5, -50], [-88, -40, -40], [-45, -68, -55],
                           [5, -72, -50], [55, -62, -30], [96, -20, 5], [108, 15, -30], [104, 15, -80],
                           [95, 0, -135]], 6), np.array([26, 24, 22, 22, 20, 20, 20, 22, 21, 21, 21]) * rscale(0.1))
    e["colon_gas"] = np.where(rng.random(11) < 0.5, rng.uniform(0.3, 0.8, size=11), 2.0)
    e["bowel"] = _bowel_loops(rng)
    # vessels that are not FLARE labels (drawn as artery / vein tissue, label 0)
    a0 = lambda z: np.array([np.interp(z, az, o[AORTA].cx), np.interp(z, az, o[AORTA].cy), z])  # noqa: E731
    i0 = lambda z: np.array([np.interp(z, iz, o[IVC].cx), np.interp(z, iz, o[IVC].cy), z])      # noqa: E731
    rk, lk = kidneys[RK][1].center, kidneys[LK][1].center
    e["arteries"] = [
        Tube([a0(-118), [-20, 24, -170], [-45, 20, -230]], 7.0),
        Tube([a0(-118), [32, 24, -170], [48, 20, -230]], 7.0),
        Tube([a0(12) + [0, -8, 0], a0(4) + [-2, -28, 0], [6, -6, -30], [0, -10, -70]], 4.0),   # SMA
        Tube([a0(32) + [0, -8, 0], a0(32) + [0, -30, 2]], 4.0),                                 # celiac
        Tube([a0(-10) + [-4, 8, 0], [-20, 44, -14], rk], 3.0),                                 # right renal
        Tube([a0(-8) + [4, 6, 0], lk], 3.0),                                                   # left renal
    ]
    e["veins"] = [
        Tube([i0(-130), [-36, 36, -180], [-42, 36, -230]], 8.0),
        Tube([i0(-130), [20, 44, -170], [40, 38, -230]], 8.0),
        Tube([lk, [25, 20, -6], [0, 18, -5], i0(-5) + [6, -4, 0]], 4.5),                       # left renal
        Tube([rk, i0(-22)], 4.5),                                                              # right renal
        Tube([[-12, 2, -8], [20, 6, 4], pa_pts[4] + [0, 13, -2], [68, 40, 30],
              sp.center - 16 * sp.rot[:, 0]], 4.5),                                           # splenic
        Tube([[-12, 2, -8], [-38, -5, 25]], 7.0),                                              # portal
    ]
    ivc_top = i0(105)
    porta = np.array([-38.0, -5.0, 25.0])
    e["liver_vessels"] = [Tube([ivc_top, jit(t, 6)], [6.0, 2.5]) for t in
                          ([-115, -5, 70], [-60, -55, 85], [10, -45, 80])]
    e["liver_vessels"] += [Tube([porta, jit(t, 6)], [6.0, 3.0]) for t in
                           ([-100, 20, 30], [-75, -40, 55], [0, -40, 55])]
    for lab in subj.absent:
        o.pop(lab, None)
    return subj


def _frame_with_z(axis: np.ndarray) -> np.ndarray:
    """A rotation matrix whose third column is `axis` (unit)."""
    a = axis / np.linalg.norm(axis)
    helper = np.array([1.0, 0, 0]) if abs(a[0]) < 0.9 else np.array([0, 1.0, 0])
    u = np.cross(helper, a)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(a, u), a], axis=1)


def _bowel_loops(rng: np.random.Generator) -> list[tuple[Tube, float]]:
    """Small-bowel loops as random smooth walks in the lower abdomen and the left upper quadrant;
    each with the fraction level of gas on its anterior side (2: none)."""
    regions = [((-65, -75, -135), (70, 5, -40), 8), ((20, -60, -60), (85, 5, -18), 3)]
    loops = []
    for lo, hi, n in regions:
        lo, hi = np.array(lo, float), np.array(hi, float)
        for _ in range(n):
            pts = [rng.uniform(lo, hi)]
            for _ in range(int(rng.integers(5, 9))):
                step = rng.normal(size=3)
                step = 32.0 * step / np.linalg.norm(step)
                nxt = pts[-1] + step
                nxt = np.where(nxt < lo, 2 * lo - nxt, nxt)
                nxt = np.where(nxt > hi, 2 * hi - nxt, nxt)
                pts.append(np.clip(nxt, lo, hi))
            gas = float(rng.uniform(0.4, 0.85)) if rng.random() < 0.3 else 2.0
            loops.append((Tube(np.array(pts), float(rng.uniform(9.0, 13.0))), gas))
    return loops


def _dome_fn(z_right: float, z_left: float):
    """Height (mm) of the diaphragm at (x, y): two domes, lower posteriorly (costophrenic recesses)."""
    def dome(x, y):
        post = (np.maximum(y, 0.0) / 90.0) ** 2 * 60.0 + (np.minimum(y, 0.0) / 90.0) ** 2 * 15.0
        r = z_right - 40.0 * ((x + 60.0) / 80.0) ** 2 - post
        l_ = z_left - 40.0 * ((x - 60.0) / 80.0) ** 2 - post
        return np.maximum(r, l_)
    return dome


def _width(z):
    """Relative body width at height z (wider pelvis and lower chest)."""
    return 1.0 + 0.08 * np.clip((-90.0 - z) / 60.0, 0.0, 1.0) + 0.03 * np.clip((z - 60.0) / 60.0, 0.0, 1.0)


def _superellipse(x, y, cx, cy, a, b, p):
    """|(x-cx)/a|^p + |(y-cy)/b|^p for p in {2, 2.5} (2.5 as t^2 sqrt|t|: pow is slow)."""
    u = np.abs((x - cx) / a)
    v = np.abs((y - cy) / b)
    if p == 2:
        return u * u + v * v
    if p == 2.5:
        return u * u * np.sqrt(u) + v * v * np.sqrt(v)
    return u ** p + v ** p


def cavity_level(x, y, z, margin=0.0):
    """<= 1 inside the abdominal/thoracic cavity (inside the muscle wall), grown by margin mm."""
    return _superellipse(x, y, 0.0, 0.0, 135.0 * _width(z) + margin, 90.0 + margin, 2.5)


# --- painting -------------------------------------------------------------------------------------

class Canvas:
    """Label and tissue maps of one grid, and the canonical coordinates of each voxel.

    Chain for a voxel: index -> physical p (grid) -> anatomical a = R_m^T (p - placement - t_m)
    (R_m, t_m: the sequence's small rigid motion) -> a + deformation(a) -> divided by the subject's
    scale = canonical q, where the shapes live. Arrays are (nz, ny, nx) like SimpleITK's.
    """

    def __init__(self, grid: Grid, subject: Subject, motion_rot=None, motion_shift=None):
        self.grid, self.subject = grid, subject
        rm = np.eye(3) if motion_rot is None else np.asarray(motion_rot, dtype=np.float64)
        tm = np.zeros(3) if motion_shift is None else np.asarray(motion_shift, dtype=np.float64)
        m = grid.index_to_physical
        self.A = rm.T @ m                                                   # a = A @ idx + b
        self.b = rm.T @ (np.asarray(grid.origin) - subject.placement - tm)
        self.A_inv = np.linalg.inv(self.A)
        shape = grid.array_shape
        idx = [np.arange(n, dtype=np.float64) for n in (shape[2], shape[1], shape[0])]  # i, j, k

        def affine(coef, const):
            # coef . (i, j, k) + const as a (nz, ny, nx) float32 array, by broadcasting
            return ((coef[2] * idx[2] + const).astype(np.float32)[:, None, None]
                    + (coef[1] * idx[1]).astype(np.float32)[None, :, None]
                    + (coef[0] * idx[0]).astype(np.float32)[None, None, :])

        dfm = subject.deformation
        q = []
        for c in range(3):
            ac = affine(self.A[c], self.b[c])
            for j in range(dfm.amp.shape[1]):
                if dfm.amp[c, j] == 0:
                    continue
                kk = dfm.k[c, j]
                arg = affine(kk @ self.A, kk @ self.b + dfm.phase[c, j])
                np.sin(arg, out=arg)
                arg *= np.float32(dfm.amp[c, j])
                ac += arg
            ac /= np.float32(subject.scale[c])
            q.append(ac)
        self.x, self.y, self.z = q
        self.label = np.zeros(shape, dtype=np.uint8)
        self.tissue = np.full(shape, T["air"], dtype=np.uint8)
        self._margin = subject.deformation.max_abs + 1.0

    def block(self, lo, hi):
        """Numpy slices (k, j, i) of the voxels whose canonical position can fall in the box [lo, hi]
        (mm), or None. Conservative: the deformation is bounded by its max_abs."""
        s = self.subject.scale
        alo = np.asarray(lo) * s - self._margin
        ahi = np.asarray(hi) * s + self._margin
        corners = np.array([[alo[0] if a else ahi[0], alo[1] if b else ahi[1], alo[2] if c else ahi[2]]
                            for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        ijk = (self.A_inv @ (corners - self.b).T).T
        lo_i = np.floor(ijk.min(axis=0)).astype(int)
        hi_i = np.ceil(ijk.max(axis=0)).astype(int) + 1
        size = self.grid.size
        lo_i = np.maximum(lo_i, 0)
        hi_i = np.minimum(hi_i, size)
        if np.any(hi_i <= lo_i):
            return None
        return (slice(lo_i[2], hi_i[2]), slice(lo_i[1], hi_i[1]), slice(lo_i[0], hi_i[0]))

    def coords(self, sl):
        return self.x[sl], self.y[sl], self.z[sl]

    def paint(self, shape: Shape, tissue: int, label: int = 0, gap: float = 0.0, exempt=(),
              only_on=None):
        """Paint `shape` with `tissue` and `label`. gap > 0: soft tissue (organs, bowel, vessels) within
        `gap` mm outside the shape, except labels in `exempt`, becomes visceral fat (label 0).
        only_on: tissue ids the shape may replace (None: any). Returns (slices, inside) or None."""
        sl = self.block(*shape.bbox(gap))
        if sl is None:
            return None
        inside, grown = shape.masks_on(self, sl, gap)
        lab, tis = self.label[sl], self.tissue[sl]
        if only_on is not None:
            inside &= np.isin(tis, list(only_on))
        if gap > 0:
            ring = grown & ~inside & ((lab > 0) | ~_HARD[tis]) & (lab != label)
            if exempt:
                ring &= ~np.isin(lab, list(exempt))
            lab[ring] = 0
            tis[ring] = T["visceral_fat"]
        lab[inside] = label
        tis[inside] = tissue
        return sl, inside


def paint_subject(canvas: Canvas) -> None:
    """Paint the whole subject on the canvas (label and tissue maps)."""
    s = canvas.subject
    p, o, e = s.params, s.organs, s.extras
    dome = p["dome"]
    full = (slice(None), slice(None), slice(None))
    x, y, z = canvas.coords(full)
    lab, tis = canvas.label, canvas.tissue
    # body layers: skin/subcutaneous fat, muscle wall, cavity
    w = _width(z)
    f = s.fat_mm
    tis[_superellipse(x, y, 0.0, 12.0 - 0.15 * f, (147.0 + 1.1 * f) * w, 112.0 + 0.85 * f, 2.5) <= 1] = T["subcut_fat"]
    tis[_superellipse(x, y, 0.0, 12.0, 147.0 * w, 112.0, 2.5) <= 1] = T["muscle"]
    cav = cavity_level(x, y, z) <= 1
    tis[cav] = T["visceral_fat"]
    del w, cav
    # thorax: diaphragm, lungs, mediastinum, heart
    sl = canvas.block([-200, -150, 20], [200, 150, 400])
    if sl is not None:
        xb, yb, zb = canvas.coords(sl)
        tb = tis[sl]
        zd = dome(xb, yb)
        cav = (cavity_level(xb, yb, zb) <= 1) & (zb > zd - 6)
        tb[cav] = T["muscle"]
        above = cav & (zb > zd)
        medi = _superellipse(xb, yb, 5.0, 25.0, 34.0, 80.0, 2.0) <= 1
        tb[above & ~medi] = T["lung"]
        tb[above & medi] = T["visceral_fat"]
    canvas.paint(Clipped(e["heart"], lambda x, y, z, m: z > dome(x, y) + 3), T["heart"])
    # bowel and colon (only over visceral fat), psoas
    fat = [T["visceral_fat"]]
    for tube, gas in e["bowel"]:
        _paint_tube_with_gas(canvas, tube, T["bowel"], gas, only_on=fat)
    colon = e["colon"]
    _paint_tube_with_gas(canvas, colon, T["colon"], e["colon_gas"], only_on=fat)
    for ps in e["psoas"]:
        canvas.paint(ps, T["muscle"], only_on=[T["visceral_fat"], T["bowel"], T["colon"], T["gas"]])
    # FLARE organs, lowest priority first
    if LIVER in o:
        canvas.paint(o[LIVER], T["liver"], LIVER, gap=0.0)
    if SPLEEN in o:
        canvas.paint(o[SPLEEN], T["spleen"], SPLEEN, gap=2.0)
    if ESOPHAGUS in o:
        r = canvas.paint(o[ESOPHAGUS], T["esophagus"], ESOPHAGUS, gap=2.0)
        if r is not None and p["esophagus_air"]:
            sl, inside = r
            xb, yb, zb = canvas.coords(sl)
            cx, cy, rx, ry = o[ESOPHAGUS].section(zb)
            core = inside & (((xb - cx) / (0.3 * rx)) ** 2 + ((yb - cy) / (0.3 * ry)) ** 2 <= 1)
            canvas.tissue[sl][core] = T["gas"]
    if STOMACH in o:
        _paint_stomach(canvas, o[STOMACH], e["stomach_tube"], p)
    if PANCREAS in o:
        canvas.paint(o[PANCREAS], T["pancreas"], PANCREAS, gap=2.0)
    if DUODENUM in o:
        canvas.paint(o[DUODENUM], T["duodenum"], DUODENUM, gap=2.0, exempt=(STOMACH,))
    if GALLBLADDER in o:
        canvas.paint(o[GALLBLADDER], T["bile"], GALLBLADDER, gap=2.0)
    for lab in (RK, LK):
        if lab in o:
            _paint_kidney(canvas, o[lab], *e["kidney_parts"][lab], lab)
    if IVC in o:
        canvas.paint(o[IVC], T["vein"], IVC, gap=1.5)
    if AORTA in o:
        canvas.paint(o[AORTA], T["artery"], AORTA, gap=1.5)
    for lab in (RAG, LAG):   # small: painted after the big vessels so that a contact never erases them
        if lab in o:
            canvas.paint(o[lab], T["adrenal"], lab, gap=2.5)
    # unlabelled vessels (do not cross the labelled aorta/IVC lumen)
    for tube in e["arteries"]:
        _paint_unlabelled(canvas, tube, T["artery"])
    for tube in e["veins"]:
        _paint_unlabelled(canvas, tube, T["vein"])
    # intrahepatic vessels keep the liver label
    for tube in e["liver_vessels"]:
        r = canvas.block(*tube.bbox())
        if r is None:
            continue
        inside, _ = tube.masks_on(canvas, r)
        canvas.tissue[r][inside & (canvas.label[r] == LIVER)] = T["liver_vessel"]
    _paint_skeleton(canvas)


def _paint_unlabelled(canvas: Canvas, tube: Tube, tissue: int) -> None:
    sl = canvas.block(*tube.bbox())
    if sl is None:
        return
    inside, _ = tube.masks_on(canvas, sl)
    lab, tis = canvas.label[sl], canvas.tissue[sl]
    inside &= (lab != AORTA) & (lab != IVC) & (tis != T["lung"]) & (tis != T["air"])
    lab[inside] = 0
    tis[inside] = tissue


def _paint_tube_with_gas(canvas: Canvas, tube: Tube, tissue: int, gas, only_on=None) -> None:
    """Paint a bowel tube; content anterior of (gas level x radius) in front of the centreline is gas.
    gas: one level or one per control point (>= 1 means no gas)."""
    sl = canvas.block(*tube.bbox())
    if sl is None:
        return
    xb, yb, zb = canvas.coords(sl)
    d, i, r = tube.query_on(canvas, sl)
    inside = d <= r
    tis = canvas.tissue[sl]
    if only_on is not None:
        inside &= np.isin(tis, list(only_on))
    tis[inside] = tissue
    levels = np.broadcast_to(np.asarray(gas, dtype=np.float64), (len(tube.control),))
    n = len(tube.samples)
    level_at = np.interp(np.linspace(0, len(levels) - 1, n), np.arange(len(levels)), levels)
    ii = np.minimum(i[inside], n - 1)
    front = (yb[inside] - tube.samples[ii, 1]) < -(level_at[ii] * r[inside])
    vals = tis[inside]
    vals[front] = T["gas"]
    tis[inside] = vals


def _paint_stomach(canvas: Canvas, shape: Shape, tube: Tube, p: dict) -> None:
    res = canvas.paint(shape, T["stomach_wall"], STOMACH, gap=2.0, exempt=(ESOPHAGUS,))
    if res is None:
        return
    sl, inside = res
    xb, yb, zb = canvas.coords(sl)
    d, i, r = tube.query(xb[inside], yb[inside], zb[inside])
    content = d <= r - 4.0
    vals = np.full(d.shape, T["stomach_wall"], dtype=np.uint8)
    vals[content] = T["stomach_fluid"] if p["stomach_fluid"] else T["stomach_food"]
    ii = np.minimum(i, len(tube.samples) - 1)
    gas = content & ((yb[inside] - tube.samples[ii, 1]) < -p["stomach_gas"] * r)
    vals[gas] = T["gas"]
    canvas.tissue[sl][inside] = vals


def _paint_kidney(canvas: Canvas, shape: Shape, kidney: Ellipsoid, sinus: Ellipsoid, label: int) -> None:
    res = canvas.paint(shape, T["kidney_cortex"], label, gap=2.0)
    if res is None:
        return
    sl, inside = res
    xb, yb, zb = canvas.coords(sl)
    lev = kidney.level(xb, yb, zb)
    tis = canvas.tissue[sl]
    tis[inside & (lev < 0.55)] = T["kidney_medulla"]
    hole, _ = sinus.masks(xb, yb, zb)
    hole &= lev <= 1.0
    tis[hole] = T["renal_sinus"]
    canvas.label[sl][hole] = 0


def _paint_skeleton(canvas: Canvas) -> None:
    """Vertebrae (bodies, discs, posterior elements, canal), ribs and iliac wings; painted last."""
    sl = canvas.block([-60, 20, -400], [60, 140, 400])
    if sl is not None:
        x, y, z = canvas.coords(sl)
        lab, tis = canvas.label[sl], canvas.tissue[sl]
        ys = spine_y(z).astype(np.float32)
        level = ((y - ys) / 18.0) ** 2 + (x / 24.0) ** 2
        phase = np.mod(z + 18.0 + 4.0, 36.0)
        body = level <= 1
        disc = body & (phase < 7.0)
        post_phase = phase < 27.0
        lamina = (((y - ys - 45.0) / 18.0) ** 2 + (x / 9.0) ** 2 <= 1) & post_phase
        transverse = ((((y - ys - 26.0) / 6.0) ** 2 + ((np.abs(x) - 32.0) / 16.0) ** 2) <= 1) & post_phase
        canal = ((y - ys - 27.0) / 8.0) ** 2 + (x / 9.0) ** 2 <= 1
        arch = (((y - ys - 27.0) / 13.0) ** 2 + (x / 14.0) ** 2 <= 1) & post_phase
        bone = body | lamina | transverse | arch
        tis[bone] = T["bone_marrow"]
        tis[bone & ~(level <= 0.7) & body] = T["bone_cortex"]
        tis[(lamina | transverse | arch) & ~body] = T["bone_cortex"]
        tis[disc] = T["disc"]
        tis[canal] = T["csf"]
        lab[bone | canal] = 0
    # ribs: bands in the chest/abdominal wall, sloping down anteriorly, below z = -30 none
    sl = canvas.block([-200, -160, -40], [200, 160, 400])
    if sl is not None:
        x, y, z = canvas.coords(sl)
        lab, tis = canvas.label[sl], canvas.tissue[sl]
        wall = (cavity_level(x, y, z) > 1) & (cavity_level(x, y, z, 14.0) <= 1)
        band = np.mod(z + 0.35 * (-y), 30.0) < 9.0
        where = wall & band & (z > -30 + 0.5 * np.abs(np.minimum(y, 0))) & ~((np.abs(x) < 60) & (y > 70))
        tis[where] = T["bone_cortex"]
        lab[where] = 0
    for side in (-1, 1):
        wing = Ellipsoid([side * 100, 48, -175], [12, 40, 70], _rz(side * 25))
        sl = canvas.block(*wing.bbox())
        if sl is None:
            continue
        x, y, z = canvas.coords(sl)
        lev = wing.level(x, y, z)
        tis, lab = canvas.tissue[sl], canvas.label[sl]
        inside = (lev <= 1) & (tis != T["air"])
        tis[inside] = T["bone_marrow"]
        tis[inside & (lev > 0.6)] = T["bone_cortex"]
        lab[inside] = 0
