"""Writing label maps: compressed NIfTI with the input's geometry, under a temporary name, then renamed."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inference.files.atomic import atomic_output

if TYPE_CHECKING:
    import SimpleITK as sitk


def write_segmentation(labels: np.ndarray, reference: sitk.Image, out_file: Path) -> None:
    """Write a (Z, Y, X) label map with the reference geometry, compressed, under a temporary name,
    then rename: readers never see a partial file, and a failure leaves nothing behind."""
    import SimpleITK as sitk
    image = sitk.GetImageFromArray(labels.astype(np.uint8, copy=False))
    image.SetSpacing(reference.GetSpacing())
    image.SetOrigin(reference.GetOrigin())
    image.SetDirection(reference.GetDirection())
    # os.chmod: readable by the host user when written as root inside a container
    with atomic_output(out_file, mode=0o644, make_parents=False) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True, compressionLevel=1)

