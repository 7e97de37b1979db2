"""MRI-like test volumes with the image sizes of the paper's Table 6 (no labels, no phantoms needed).

What matters for efficiency is the grid (size, spacing, orientation) and an intensity distribution
like abdominal MRI (dark background, bright-ish body, organ-like blobs, bias field, noise), so that
cropping, normalisation, resampling and the sliding window do the same work as on real cases.

Sizes are the paper's (nibabel order x, y, z). The spacings are not published; docs/flare.md section 6
states the assumption used here: in-plane spacing = 400 mm / max(x, y); slice spacing = 250 mm / z,
clipped to [1, 6] mm.

CLI: `python -m benchmarks.flare.volumes OUT_DIR [--cases amos_0507 ...]` writes `<case>_0000.nii.gz`.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inference.files.atomic import atomic_output

# case -> (x, y, z) size, and the paper's RTX 3090 numbers (time s, max GPU MB, total GPU MB*s).
TABLE6: dict[str, tuple[tuple[int, int, int], tuple[float, int, int]]] = {
    "amos_0507": ((320, 290, 72), (15.6, 5109, 55128)),
    "amos_0540": ((192, 192, 100), (13.4, 4980, 44871)),
    "amos_0546": ((576, 468, 72), (19.9, 5284, 74444)),
    "amos_0557": ((512, 152, 512), (21.2, 5204, 75588)),
    "amos_7236": ((400, 400, 115), (19.7, 5397, 73898)),
    "amos_7324": ((256, 256, 80), (15.4, 5087, 54271)),
    "amos_7799": ((432, 432, 40), (23.6, 5848, 98605)),
    "amos_8082": ((1024, 1024, 82), (32.6, 4927, 112053)),
}
PAPER_MEAN = (20.0, None, 73607)  # validation mean in the paper: 20 s, 73,607 MB*s


def table6_spacing(size_xyz: Sequence[int]) -> tuple[float, float, float]:
    """(sx, sy, sz) in mm for a (x, y, z) size, by docs/flare.md section 6's stated assumption."""
    x, y, z = size_xyz
    inplane = 400.0 / max(x, y)
    return inplane, inplane, float(np.clip(250.0 / z, 1.0, 6.0))


def mri_like_array(size_xyz: Sequence[int], spacing_xyz: Sequence[float], seed: int = 0,
                   slab: int = 8) -> np.ndarray:
    """int16 array (z, y, x): an abdomen-like MRI volume in physical units (mm), built slab by slab
    (`slab` slices at a time) so that large grids do not need several float copies of the volume."""
    rng = np.random.default_rng(seed)
    x, y, z = (int(s) for s in size_xyz)
    sx, sy, sz = (float(s) for s in spacing_xyz)
    # Physical coordinates centred on the volume (mm).
    px = (np.arange(x, dtype=np.float32) - (x - 1) / 2) * sx
    py = (np.arange(y, dtype=np.float32) - (y - 1) / 2) * sy
    pz = (np.arange(z, dtype=np.float32) - (z - 1) / 2) * sz
    fov = min(x * sx, y * sy)
    body_a, body_b = 0.42 * fov, 0.32 * fov              # body ellipse half-axes (mm)
    # Organ-like blobs: centre (mm, relative to the body), half-axes (mm), intensity.
    blobs = [((-0.35, -0.05, 0.1), (0.30, 0.25, 0.35), 700.0),   # liver-like
             ((0.45, 0.05, 0.15), (0.13, 0.12, 0.20), 560.0),    # spleen-like
             ((-0.25, 0.45, -0.15), (0.08, 0.10, 0.14), 820.0),  # kidney-like
             ((0.30, 0.45, -0.15), (0.08, 0.10, 0.14), 820.0),
             ((0.0, 0.25, 0.0), (0.04, 0.04, 0.9), 950.0),       # aorta-like tube
             ((0.15, -0.15, 0.05), (0.18, 0.10, 0.10), 420.0)]   # stomach-like
    extra = [((rng.uniform(-.6, .6), rng.uniform(-.5, .5), rng.uniform(-.5, .5)),
              (rng.uniform(.03, .1), rng.uniform(.03, .1), rng.uniform(.05, .2)), rng.uniform(300, 900))
             for _ in range(6)]
    zext = max(z * sz / 2, 1.0)
    out = np.empty((z, y, x), dtype=np.int16)
    yy, xx = py[:, None], px[None, :]
    fov_mask = (xx / (0.5 * x * sx)) ** 2 + (yy / (0.5 * y * sy)) ** 2 <= 1.0  # zero corners
    bias_xy = 1.0 + 0.15 * np.cos(xx / fov * 2.4 + 0.3) * np.cos(yy / fov * 1.9 - 0.2)
    for z0 in range(0, z, slab):
        zz = pz[z0:z0 + slab, None, None]
        body = ((xx / body_a) ** 2 + (yy / body_b) ** 2 <= 1.0)[None] & np.ones_like(zz, dtype=bool)
        vol = np.where(body, 380.0, 0.0).astype(np.float32)
        for (cx, cy, cz), (ax, ay, az), val in blobs + extra:
            d = (((xx - cx * body_a) / (ax * body_a)) ** 2 + ((yy - cy * body_b) / (ay * body_b)) ** 2
                 + ((zz - cz * zext) / (az * zext)) ** 2)
            vol = np.where(d <= 1.0, np.float32(val), vol)
        vol *= bias_xy[None] * (1.0 + 0.1 * np.sin(zz / zext * 1.3))
        # Rician-like magnitude noise: |signal + complex gaussian|.
        n1 = rng.normal(0.0, 25.0, vol.shape).astype(np.float32)
        n2 = rng.normal(0.0, 25.0, vol.shape).astype(np.float32)
        vol = np.sqrt((vol + n1) ** 2 + n2 ** 2)
        vol *= fov_mask[None]
        out[z0:z0 + slab] = np.clip(vol, 0, 32767).astype(np.int16)
    return out


def mri_like_image(size_xyz: Sequence[int], spacing_xyz: Sequence[float] | None = None, seed: int = 0):
    """SimpleITK image (int16) of the given (x, y, z) size and spacing (default: table6_spacing)."""
    import SimpleITK as sitk
    spacing = tuple(spacing_xyz) if spacing_xyz is not None else table6_spacing(size_xyz)
    img = sitk.GetImageFromArray(mri_like_array(size_xyz, spacing, seed))
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(-0.5 * n * s for n, s in zip(size_xyz, spacing)))
    return img


def write_case(out_dir: str | os.PathLike, case: str, size_xyz: Sequence[int],
               spacing_xyz: Sequence[float] | None = None, seed: int = 0, overwrite: bool = False) -> Path:
    """Write `<out_dir>/<case>_0000.nii.gz` (atomically); an existing file of the same size is kept."""
    import SimpleITK as sitk
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{case}_0000.nii.gz"
    if path.exists() and not overwrite:
        r = sitk.ImageFileReader()
        r.SetFileName(str(path))
        try:
            r.ReadImageInformation()
            if tuple(r.GetSize()) == tuple(size_xyz):
                return path
        except RuntimeError:
            pass
    img = mri_like_image(size_xyz, spacing_xyz, seed)
    with atomic_output(path, mode=0o644) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)
    return path


def write_table6_cases(out_dir: str | os.PathLike, cases: Sequence[str] | None = None,
                       seed: int = 0, log=print) -> list[Path]:
    """Write the Table 6 volumes (all, or `cases`); returns their paths in Table 6 order."""
    names = list(cases) if cases else list(TABLE6)
    unknown = [c for c in names if c not in TABLE6]
    if unknown:
        raise ValueError(f"unknown Table 6 case(s) {unknown}; known: {list(TABLE6)}")
    paths = []
    for i, c in enumerate(names):
        size = TABLE6[c][0]
        log(f"volume {c}: size {size}, spacing {tuple(round(s, 3) for s in table6_spacing(size))} mm")
        paths.append(write_case(out_dir, c, size, seed=seed + i))
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flare.volumes", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--cases", nargs="+", help=f"subset of {list(TABLE6)}")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    write_table6_cases(a.out_dir, a.cases, a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
