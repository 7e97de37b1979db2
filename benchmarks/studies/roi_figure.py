"""A picture of ROI-first prediction on one case: coronal and axial slices, the truth's organs, the
localiser's foreground and the box the full model runs in (docs/roi.png).

    python -m benchmarks.studies.roi_figure -i CASE_0000.nii.gz [--label CASE.nii.gz] [-m weights] -o docs/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def make_figure(image_path: Path, label_path: Path | None, model_dir: Path, out_file: Path) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    import SimpleITK as sitk

    from inference.files.cases import Case
    from inference.files.reading import read_case
    from inference.loading import load_model
    from inference.roi import decide_box
    from phantoms.preview import _COLOURS

    model = load_model(model_dir)
    if model.localizer is None:
        raise SystemExit(f"error: {model_dir} has no localizer/")
    volume = read_case(Case(image_path.name, [image_path]))
    decision = decide_box(volume.data, volume.spacing, model, direction=volume.reference.GetDirection())
    img = volume.data[0]
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path))) if label_path else np.zeros(img.shape, np.uint8)
    sz, sy, sx = volume.spacing
    box = decision.box or tuple(slice(0, n) for n in img.shape)
    zc = (box[0].start + box[0].stop) // 2
    yc = (box[1].start + box[1].stop) // 2
    lo, hi = 0.0, float(np.percentile(img, 99.5)) or 1.0

    def panel(ax, gray, labels, aspect, rect, title):
        g = np.clip((gray - lo) / (hi - lo), 0, 1)
        rgb = np.repeat(g[..., None], 3, -1)
        m = labels > 0
        rgb[m] = 0.55 * rgb[m] + 0.45 * _COLOURS[labels[m]]
        ax.imshow(rgb, aspect=aspect, interpolation="nearest")
        (r0, r1), (c0, c1) = rect
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, lw=2, ec="yellow"))
        ax.set_title(title, fontsize=9)
        ax.axis("off")

    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    # coronal: rows z (flipped so that superior is up when z grows upwards), columns x
    cor = img[:, yc, :][::-1]
    cor_lab = lab[:, yc, :][::-1]
    nz = img.shape[0]
    panel(axes[0], cor, cor_lab, sz / sx, ((nz - box[0].stop, nz - box[0].start), (box[2].start, box[2].stop)),
          f"coronal, row {yc}")
    panel(axes[1], img[zc], lab[zc], sy / sx, ((box[1].start, box[1].stop), (box[2].start, box[2].stop)),
          f"axial, slice {zc}")
    text = (f"{image_path.name}: {img.shape[2]}x{img.shape[1]}x{img.shape[0]} at {sx:.2f}x{sy:.2f}x{sz:.2f} mm; "
            f"yellow: the box the full model runs in ({decision.reason}, {100 * decision.fraction:.0f} % of the "
            f"volume; localiser foreground {decision.foreground_ml:.0f} mL); colours: the truth's organs")
    fig.suptitle(text, fontsize=8, wrap=True)
    fig.tight_layout()
    from inference.files.atomic import atomic_output
    with atomic_output(out_file, mode=0o644) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.roi_figure", description=__doc__.split("\n\n")[0])
    ap.add_argument("-i", "--input", type=Path, required=True, help="a <case>_0000.nii.gz image")
    ap.add_argument("--label", type=Path, default=None, help="its truth label map (optional)")
    ap.add_argument("-m", "--model", type=Path, default=REPO / "weights", help="model folder with localizer/")
    ap.add_argument("-o", "--output", type=Path, default=REPO / "docs", help="folder for roi.png")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(make_figure(args.input, args.label, args.model, args.output / "roi.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
