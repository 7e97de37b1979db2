"""Helpers for tests that compare our predictor with nnU-Net's own nnUNetPredictor on the same files."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def blob_volume(shape_zyx, seed: int = 0, n_blobs: int = 12, background: float = 50.0) -> np.ndarray:
    """A float32 volume of overlapping Gaussian blobs of varied brightness on a noisy body-like ellipse,
    zero outside it (so crop-to-nonzero has work to do). Structure gives random networks varied output."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape_zyx], indexing="ij")
    body = (yy / 0.85) ** 2 + (xx / 0.9) ** 2 <= 1
    vol = np.full(shape_zyx, background, np.float32)
    for _ in range(n_blobs):
        c = rng.uniform(-0.7, 0.7, 3)
        r = rng.uniform(0.15, 0.45, 3)
        d = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2
        vol += rng.uniform(-60, 160) * np.exp(-d).astype(np.float32)
    vol += rng.normal(0, 5, shape_zyx).astype(np.float32)
    vol[~body] = 0
    return vol


def write_image(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Path:
    """Write a (Z, Y, X) array as NIfTI with SimpleITK geometry (spacing/origin in x, y, z order)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def oblique_direction(degrees: float = 20.0, flip_x: bool = True) -> tuple[float, ...]:
    """A rotation about z by `degrees`, optionally with the x axis flipped (a non-identity direction)."""
    t = np.deg2rad(degrees)
    r = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    if flip_x:
        r = r @ np.diag([-1, 1, 1])
    return tuple(r.flatten())


class _Float32Half:
    """Stands in for the `torch` module inside nnU-Net's predictor module, with `torch.half` meaning
    float32: its sliding window then sums the tile logits and weights in float32 instead of float16."""

    def __init__(self, torch_module):
        self._torch = torch_module
        self.half = torch_module.float32

    def __getattr__(self, name):
        return getattr(self._torch, name)


@contextlib.contextmanager
def float32_logits():
    """nnU-Net's predictor with its float16 logits and weight buffers made float32, for as long as the
    context lasts. Its float16 sum cannot resolve the small Gaussian weights at image faces, which flips
    the argmax there; with float32 sums its labels are ours, so a comparison can be exact."""
    import torch
    from nnunetv2.inference import predict_from_raw_data as module
    module.torch = _Float32Half(torch)
    try:
        yield
    finally:
        module.torch = torch


def run_nnunet(model_dir: Path, input_files: list[Path], output_dir: Path, folds=("all",),
               use_mirroring: bool = False, logits_float32: bool = False) -> Path:
    """Segment one case with nnunetv2's nnUNetPredictor on CPU; returns the written file.

    logits_float32: sum tile logits in float32 (`float32_logits`) instead of nnU-Net's float16."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=tuple(folds),
                                                   checkpoint_name="checkpoint_final.pth")
    output_dir.mkdir(parents=True, exist_ok=True)
    case = input_files[0].name[: -len("_0000.nii.gz")]
    precision = float32_logits() if logits_float32 else contextlib.nullcontext()
    with precision, contextlib.redirect_stdout(io.StringIO()):
        predictor.predict_from_files_sequential([[str(f) for f in input_files]],
                                                [str(output_dir / case)], save_probabilities=False,
                                                overwrite=True)
    return output_dir / f"{case}.nii.gz"


def geometry(image: sitk.Image) -> tuple:
    return (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
