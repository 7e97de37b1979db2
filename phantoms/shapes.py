"""Vectorised solid primitives in the phantom's anatomical frame (mm).

Each shape answers, for arrays of points x, y, z (any one shape), whether they lie inside it and
inside it grown by a margin (for the thin fat planes between organs), and gives an axis-aligned
bounding box so the painter only evaluates the part of the image that can be inside.
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import make_interp_spline
from scipy.spatial import cKDTree


class Shape:
    def bbox(self, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi): (3,) mm corners of a box containing the shape grown by `margin`."""
        raise NotImplementedError

    def masks(self, x, y, z, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(inside, inside the shape grown by `margin` mm): boolean arrays shaped like x."""
        raise NotImplementedError

    def masks_on(self, canvas, sl, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """masks() for the voxels of canvas block `sl` (a canvas gives coords(sl) and block(lo, hi));
        shapes that can use the canvas's spatial layout to work faster override this."""
        return self.masks(*canvas.coords(sl), margin)


class Ellipsoid(Shape):
    """Solid ellipsoid: centre (3,), semi-axes radii (3,) mm along the columns of `rot` (3, 3).

    wobble: 6 coefficients of an irregular surface: inside is |u|^2 - w(u) <= 1 with
    w = c0 u0 u1 + c1 u1 u2 + c2 u0 u2 + (c3 u0^3 + c4 u1^3 + c5 u2^3) / |u|  (u: coordinates in
    semi-axis units). w is homogeneous of degree 2, so the surface radius along a direction d is
    1 / sqrt(1 - w(d)): the shape is skewed and egg-like by about +-c/2, and stays star-shaped
    (one piece) while sum(|c|) < 1.
    """

    def __init__(self, center, radii, rot=None, wobble=None):
        self.center = np.asarray(center, dtype=np.float64)
        self.radii = np.asarray(radii, dtype=np.float64)
        self.rot = np.eye(3) if rot is None else np.asarray(rot, dtype=np.float64)
        self.wobble = None if wobble is None or not np.any(wobble) else np.asarray(wobble, dtype=np.float64)
        if self.wobble is not None and np.abs(self.wobble).sum() >= 0.9:
            raise ValueError(f"wobble coefficients too large (sum |c| = {np.abs(self.wobble).sum():.2f} >= 0.9)")

    def local(self, x, y, z):
        """Coordinates (mm) along the ellipsoid's own axes, relative to its centre."""
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        r = self.rot
        return (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
                r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
                r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz)

    def _level_local(self, u, margin: float):
        a, b, c = (ui / (ri + margin) for ui, ri in zip(u, self.radii))
        lev = a * a + b * b + c * c
        if self.wobble is not None:
            w = self.wobble
            norm = np.sqrt(lev) + 1e-6
            lev = lev - (w[0] * a * b + w[1] * b * c + w[2] * a * c
                         + (w[3] * a * a * a + w[4] * b * b * b + w[5] * c * c * c) / norm)
        return lev

    def level(self, x, y, z, margin: float = 0.0):
        """<= 1 inside (the ellipsoid grown by margin mm); 0 at the centre."""
        return self._level_local(self.local(x, y, z), margin)

    def masks(self, x, y, z, margin: float = 0.0):
        u = self.local(x, y, z)
        inside = self._level_local(u, 0.0) <= 1.0
        if margin <= 0:
            return inside, inside
        return inside, self._level_local(u, margin) <= 1.0

    def bbox(self, margin: float = 0.0):
        # along any direction the radius grows by at most 1 / sqrt(1 - sum|c|)
        grow = 1.0 if self.wobble is None else 1.0 / np.sqrt(max(1e-3, 1.0 - float(np.abs(self.wobble).sum())))
        half = np.sqrt(((self.rot * (grow * (self.radii + margin))[None, :]) ** 2).sum(axis=1))
        return self.center - half, self.center + half

    def point(self, local_unit) -> np.ndarray:
        """Anatomical position of a point given in units of the semi-axes (e.g. (0, 0, 1): top pole)."""
        return self.center + self.rot @ (np.asarray(local_unit, dtype=np.float64) * self.radii)


def _resample_curve(points: np.ndarray, step_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth curve through control points (n, 3), sampled every ~step_mm; returns (samples, t) with t
    the fractional control-point index of each sample (for interpolating per-point values)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(np.ceil(s[-1] / step_mm)) + 1)
    k = min(3, len(points) - 1)
    spline = make_interp_spline(s, points, k=k, bc_type=None if k < 3 else "natural")
    ss = np.linspace(0.0, s[-1], n)
    t = np.interp(ss, s, np.arange(len(points), dtype=np.float64))
    return spline(ss), t


def _point_segment_distance(pts: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """(n,) distances of points (n, 3) to the segment p0-p1."""
    d = p1 - p0
    L2 = float(d @ d)
    t = np.zeros(len(pts)) if L2 == 0 else np.clip((pts - p0) @ d / L2, 0.0, 1.0)
    return np.linalg.norm(pts - (p0 + t[:, None] * d), axis=1)


def _capsule(x, y, z, p0, p1, radius: float) -> np.ndarray:
    """Boolean array like x: points within `radius` of the segment p0-p1."""
    d = (p1 - p0).astype(np.float32)
    L2 = float(d @ d)
    rx, ry, rz = x - np.float32(p0[0]), y - np.float32(p0[1]), z - np.float32(p0[2])
    if L2 > 0:
        t = np.clip((rx * d[0] + ry * d[1] + rz * d[2]) / np.float32(L2), 0.0, 1.0)
        rx, ry, rz = rx - t * d[0], ry - t * d[1], rz - t * d[2]
    return rx * rx + ry * ry + rz * rz <= np.float32(radius * radius)


class Tube(Shape):
    """A tube of varying radius around a smooth curve through control points (n, 3) with radii (n,).

    Points are inside when their distance to the nearest curve sample (every 1 mm) is at most the radius
    there; the ends are rounded. The samples are kept in chunks of `chunk` samples, each with its own
    k-d tree, so that a long curved tube (colon, stomach) only looks at voxels near each piece.
    """

    def __init__(self, points, radii, step_mm: float = 1.0, chunk: int = 24):
        pts = np.asarray(points, dtype=np.float64)
        rad = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(pts),))
        self.samples, t = _resample_curve(pts, step_mm)
        self.radii = np.interp(t, np.arange(len(pts)), rad)
        self.rmax = float(self.radii.max())
        self.control = pts
        n = len(self.samples)
        self._chunks = []
        for a in range(0, n, chunk):
            b = min(n, a + chunk + 1)
            seg = self.samples[a:b]
            p0, p1 = seg[0], seg[-1]
            dev = float(_point_segment_distance(seg, p0, p1).max())   # how far the chunk bends
            self._chunks.append((a, cKDTree(seg), seg.min(axis=0), seg.max(axis=0),
                                 float(self.radii[a:b].max()), p0, p1, dev))
        self._tree = cKDTree(self.samples)

    def _radius_at(self, i):
        """Radius at sample indices i; -inf for the 'no sample' index len(samples)."""
        return np.concatenate([self.radii, [-np.inf]])[i]

    def query(self, x, y, z, margin: float = 0.0):
        """(distance mm, nearest sample index, radius there) for each point; points farther than
        rmax + margin get distance inf, index len(samples) and radius -inf."""
        pts = np.stack([np.ravel(x), np.ravel(y), np.ravel(z)], axis=1).astype(np.float64)
        d, i = self._tree.query(pts, distance_upper_bound=self.rmax + margin + 1e-6)
        shape = np.shape(x)
        return d.reshape(shape), i.reshape(shape), self._radius_at(i).reshape(shape)

    def query_on(self, canvas, sl, margin: float = 0.0):
        """query() for the voxels of canvas block `sl`, chunk by chunk: each chunk only looks at the
        voxels of its own box near its chord. A point farther than a chunk's own rmax + margin from it is
        not matched there, so its nearest sample may come from another chunk: the masks equal query()'s
        except where a thin part of a tube passes close to a wide part."""
        sl = tuple(slice(*s.indices(n)[:2]) for s, n in zip(sl, canvas.x.shape))   # explicit bounds
        shape = tuple(s.stop - s.start for s in sl)
        d = np.full(shape, np.inf)
        i = np.full(shape, len(self.samples), dtype=np.int64)
        for a, tree, lo, hi, rmax, p0, p1, dev in self._chunks:
            m = rmax + margin
            sub = canvas.block(lo - m, hi + m)
            if sub is None:
                continue
            rel = tuple(slice(max(p.start, q.start) - q.start, min(p.stop, q.stop) - q.start)
                        for p, q in zip(sub, sl))
            if any(r.stop <= r.start for r in rel):
                continue
            absl = tuple(slice(r.start + q.start, r.stop + q.start) for r, q in zip(rel, sl))
            x, y, z = canvas.coords(absl)
            # cheap prefilter: only points within m + dev of the chunk's chord can be within m of it
            near = _capsule(x, y, z, p0, p1, m + dev + 1e-3)
            if not near.any():
                continue
            pts = np.stack([x[near], y[near], z[near]], axis=1).astype(np.float64)
            dc, ic = tree.query(pts, distance_upper_bound=m + 1e-6)
            dv, iv = d[rel], i[rel]                       # views into d and i
            dsub, isub = dv[near], iv[near]               # copies of the candidates
            better = dc < dsub
            dsub[better] = dc[better]
            isub[better] = ic[better] + a
            dv[near] = dsub
            iv[near] = isub
        return d, i, self._radius_at(i)

    def masks(self, x, y, z, margin: float = 0.0):
        d, _, r = self.query(x, y, z, margin)
        return d <= r, d <= r + margin

    def masks_on(self, canvas, sl, margin: float = 0.0):
        d, _, r = self.query_on(canvas, sl, margin)
        return d <= r, d <= r + margin

    def bbox(self, margin: float = 0.0):
        m = self.rmax + margin
        return self.samples.min(axis=0) - m, self.samples.max(axis=0) + m


class ZTube(Shape):
    """A tube running along z: at height z its cross-section is the ellipse centred (cx(z), cy(z)) with
    semi-axes (rx(z), ry(z)), interpolated from control rows; flat ends at the first and last z."""

    def __init__(self, z, cx, cy, rx, ry=None):
        order = np.argsort(z)
        self.z = np.asarray(z, dtype=np.float64)[order]
        self.cx = np.asarray(cx, dtype=np.float64)[order]
        self.cy = np.asarray(cy, dtype=np.float64)[order]
        self.rx = np.broadcast_to(np.asarray(rx, dtype=np.float64), self.z.shape)[order]
        self.ry = self.rx if ry is None else np.broadcast_to(np.asarray(ry, dtype=np.float64), self.z.shape)[order]

    def section(self, z):
        """(cx, cy, rx, ry) at heights z (arrays like z)."""
        return (np.interp(z, self.z, self.cx), np.interp(z, self.z, self.cy),
                np.interp(z, self.z, self.rx), np.interp(z, self.z, self.ry))

    def masks(self, x, y, z, margin: float = 0.0):
        cx, cy, rx, ry = self.section(z)
        in_z = (z >= self.z[0]) & (z <= self.z[-1])
        inside = in_z & (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0)
        if margin <= 0:
            return inside, inside
        in_zm = (z >= self.z[0] - margin) & (z <= self.z[-1] + margin)
        grown = in_zm & (((x - cx) / (rx + margin)) ** 2 + ((y - cy) / (ry + margin)) ** 2 <= 1.0)
        return inside, grown

    def bbox(self, margin: float = 0.0):
        lo = np.array([(self.cx - self.rx).min(), (self.cy - self.ry).min(), self.z[0]]) - margin
        hi = np.array([(self.cx + self.rx).max(), (self.cy + self.ry).max(), self.z[-1]]) + margin
        return lo, hi


class Clipped(Shape):
    """`shape` restricted to where keep(x, y, z, margin) is True (e.g. below the diaphragm)."""

    def __init__(self, shape: Shape, keep):
        self.shape, self.keep = shape, keep

    def masks(self, x, y, z, margin: float = 0.0):
        a, b = self.shape.masks(x, y, z, margin)
        return a & self.keep(x, y, z, 0.0), b & self.keep(x, y, z, margin)

    def masks_on(self, canvas, sl, margin: float = 0.0):
        a, b = self.shape.masks_on(canvas, sl, margin)
        x, y, z = canvas.coords(sl)
        return a & self.keep(x, y, z, 0.0), b & self.keep(x, y, z, margin)

    def bbox(self, margin: float = 0.0):
        return self.shape.bbox(margin)


class Union(Shape):
    def __init__(self, *shapes: Shape):
        self.shapes = shapes

    def masks(self, x, y, z, margin: float = 0.0):
        a, b = self.shapes[0].masks(x, y, z, margin)
        for s in self.shapes[1:]:
            c, d = s.masks(x, y, z, margin)
            a, b = a | c, b | d
        return a, b

    def masks_on(self, canvas, sl, margin: float = 0.0):
        a, b = self.shapes[0].masks_on(canvas, sl, margin)
        for s in self.shapes[1:]:
            c, d = s.masks_on(canvas, sl, margin)
            a, b = a | c, b | d
        return a, b

    def bbox(self, margin: float = 0.0):
        boxes = [s.bbox(margin) for s in self.shapes]
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


class Minus(Shape):
    """`shape` with `hole` cut out (the grown version keeps the same hole)."""

    def __init__(self, shape: Shape, hole: Shape):
        self.shape, self.hole = shape, hole

    def masks(self, x, y, z, margin: float = 0.0):
        a, b = self.shape.masks(x, y, z, margin)
        h, _ = self.hole.masks(x, y, z, 0.0)
        return a & ~h, b & ~h if margin <= 0 else b

    def masks_on(self, canvas, sl, margin: float = 0.0):
        a, b = self.shape.masks_on(canvas, sl, margin)
        h, _ = self.hole.masks_on(canvas, sl, 0.0)
        return a & ~h, b & ~h if margin <= 0 else b

    def bbox(self, margin: float = 0.0):
        return self.shape.bbox(margin)
