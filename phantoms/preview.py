"""A picture of the phantoms: for each modality, an axial and a coronal slice of one subject with and
without the label overlay. Used for the README (docs/phantoms.png).

    python -m phantoms.preview -o docs [--seed 3]   # writes docs/phantoms.png
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from inference.files.atomic import atomic_output

from .generate import generate_arrays
from .tissues import MODALITIES

# one colour per FLARE label 1..13 (RGB 0-1)
_COLOURS = np.array([
    [0.00, 0.00, 0.00], [0.85, 0.33, 0.10], [0.93, 0.69, 0.13], [0.49, 0.18, 0.56], [0.47, 0.67, 0.19],
    [0.90, 0.10, 0.10], [0.10, 0.40, 0.95], [0.95, 0.50, 0.80], [0.00, 0.85, 0.85], [0.20, 0.80, 0.20],
    [1.00, 1.00, 0.20], [0.60, 0.45, 0.95], [1.00, 0.60, 0.30], [0.30, 0.75, 0.93]])


def _window(img: np.ndarray, modality: str) -> np.ndarray:
    if modality == "ct":
        lo, hi = -160.0, 240.0
    else:
        body = img[img > np.percentile(img, 40)]
        lo, hi = 0.0, float(np.percentile(body, 99.5)) if body.size else float(img.max() or 1)
    return np.clip((img.astype(np.float32) - lo) / (hi - lo), 0, 1)


def _overlay(gray: np.ndarray, lab: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    m = lab > 0
    rgb[m] = (1 - alpha) * rgb[m] + alpha * _COLOURS[lab[m]]
    return rgb


def make_preview(path: str, seed: int = 3, modalities=MODALITIES, spacing=(1.5, 1.5, 3.0)) -> None:
    """Write a PNG: columns = modalities, rows = axial, axial + labels, coronal + labels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from flare.labels import ORGANS

    fig, axes = plt.subplots(3, len(modalities), figsize=(3.2 * len(modalities), 9.6))
    axes = np.atleast_2d(axes).reshape(3, len(modalities))
    for col, mod in enumerate(modalities):
        img, lab, grid, _ = generate_arrays(seed, mod, spacing=spacing, direction="axial")
        panc = lab == 4                      # axial slice through the pancreas: most organs in view
        k = int(np.round(np.nonzero(panc)[0].mean())) if panc.any() else lab.shape[0] // 2
        kid = np.isin(lab, (2, 13))
        j = int(np.round(np.nonzero(kid)[1].mean())) if kid.any() else lab.shape[1] // 2
        g = _window(img, mod)
        aspect = grid.spacing[2] / grid.spacing[0]
        axes[0, col].imshow(g[k], cmap="gray", interpolation="nearest")
        axes[1, col].imshow(_overlay(g[k], lab[k]), interpolation="nearest")
        axes[2, col].imshow(_overlay(g[::-1, j, :], lab[::-1, j, :]), aspect=aspect, interpolation="nearest")
        axes[0, col].set_title(f"{mod.upper()}  {grid.size[0]}x{grid.size[1]}x{grid.size[2]}", fontsize=10)
        for r in range(3):
            axes[r, col].set_xticks([])
            axes[r, col].set_yticks([])
    axes[0, 0].set_ylabel("axial", fontsize=10)
    axes[1, 0].set_ylabel("axial + labels", fontsize=10)
    axes[2, 0].set_ylabel("coronal + labels", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=_COLOURS[o.label]) for o in ORGANS]
    fig.legend(handles, [o.name for o in ORGANS], loc="lower center", ncol=7, fontsize=8, frameon=False)
    fig.suptitle(f"Synthetic abdominal phantom, subject seed {seed} (radiological view: patient right on "
                 f"the left)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m phantoms.preview", description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default="docs", help="folder to write phantoms.png to (default docs)")
    ap.add_argument("--seed", type=int, default=3, help="subject seed (default 3)")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    path = os.path.join(args.output, "phantoms.png")
    make_preview(path, seed=args.seed)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
