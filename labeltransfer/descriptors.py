"""`descriptors`: convert images (a folder or a whole nnU-Net raw dataset) to MIND-SSC descriptors.

Each single-channel image `<case>_0000.nii.gz` becomes 12 float32 images `<case>_0000..0011.nii.gz`
on the same grid (channel k = MIND channel k, see inference.mind.PAIRS). In dataset mode the
labels are linked or copied and dataset.json gets the MIND channel names and the "mind" entry that
declares the descriptor parameters (labeltransfer/README.md, "dataset.json convention").

This is for training data (the 50 CT scans). A model trained on it predicts MRI without converted
folders: the predictor computes the descriptor on the device from the "mind" entry.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk
import torch

from inference.device import DEVICE_CHOICES, resolve_device
from inference.mind import (
    MIND_KEY,
    NUM_CHANNELS,
    PATCHES,
    descriptor_channels_from_dataset_json,
    mind_channel_names,
    mind_dataset_json_entry,
    mind_ssc,
)
from labeltransfer import io


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)     # outputs already there (resume)
    failed: dict[str, str] = field(default_factory=dict)  # case -> error

    def merge(self, other: Summary) -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.failed.update(other.failed)


def descriptor_images(image: sitk.Image, params: dict, slab: int | None = 32, device: str = "cpu",
                      fp16: bool = False) -> list[sitk.Image]:
    """The 12 MIND channels of a 3-D SimpleITK image as float32 SimpleITK images on the same grid.

    params: mind_ssc keyword arguments (radius, dilation, patch, sigma). fp16: compute in float16
    (CUDA only). Work memory is bounded by `slab` slices (see mind_ssc).
    """
    dev = resolve_device(device)
    arr = torch.from_numpy(sitk.GetArrayFromImage(image))  # (Z, Y, X)
    desc = mind_ssc(arr, slab=slab, device=dev, dtype=torch.float16 if fp16 else None, **params)
    out = []
    for k in range(NUM_CHANNELS):
        im = sitk.GetImageFromArray(desc[k].float().cpu().numpy())
        im.CopyInformation(image)
        out.append(im)
    return out


def _channel_path(folder: Path, case: str, k: int) -> Path:
    return folder / f"{case}_{k:04d}{io.FILE_ENDING}"


def convert_images_folder(src: str | Path, dst: str | Path, params: dict, slab: int | None = 32,
                          device: str = "cpu", fp16: bool = False, overwrite: bool = False,
                          log=print) -> Summary:
    """Convert every case of an nnU-Net images folder (one channel each) into 12 descriptor channels.

    Resumable: a case whose 12 outputs all exist is skipped unless `overwrite`. One bad case is
    reported in the summary and does not stop the others.
    """
    src, dst = Path(src), Path(dst)
    cases = io.list_image_cases(src)
    dst.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    for n, (case, files) in enumerate(cases.items(), 1):
        outs = [_channel_path(dst, case, k) for k in range(NUM_CHANNELS)]
        if not overwrite and all(p.exists() for p in outs):
            summary.skipped.append(case)
            continue
        t0 = time.perf_counter()
        try:
            if len(files) != 1:
                raise io.CaseError(f"{src}: case {case!r} has {len(files)} channels; MIND needs exactly one "
                                   f"(_0000)")
            image = io.read_image(files[0], sitk.sitkFloat32)
            for k, im in enumerate(descriptor_images(image, params, slab, device, fp16)):
                io.write_image_atomic(im, outs[k])
        except (io.CaseError, ValueError, RuntimeError) as e:
            summary.failed[case] = str(e)
            log(f"[{n}/{len(cases)}] {case}: FAILED: {e}")
            continue
        summary.done.append(case)
        log(f"[{n}/{len(cases)}] {case}: {time.perf_counter() - t0:.1f} s")
    return summary


def mind_dataset_json(src_json: dict, params: dict, where: str = "dataset.json") -> dict:
    """dataset.json of the descriptor dataset: MIND channel names plus the "mind" entry."""
    if descriptor_channels_from_dataset_json(src_json) is not None:
        raise ValueError(f"{where}: the dataset already declares MIND input")
    channels = src_json.get("channel_names", src_json.get("modality"))
    if not isinstance(channels, dict) or len(channels) != 1:
        raise ValueError(f"{where}: MIND needs a single-channel dataset, channel_names is {channels!r}")
    out = {k: v for k, v in src_json.items() if k != "modality"}
    out["channel_names"] = mind_channel_names()
    out[MIND_KEY] = mind_dataset_json_entry(**params)
    out["mind_source_channel"] = str(next(iter(channels.values())))
    return out


def convert_dataset(src: str | Path, dst: str | Path, params: dict, slab: int | None = 32,
                    device: str = "cpu", fp16: bool = False, link: str = "symlink",
                    overwrite: bool = False, log=print) -> Summary:
    """Convert an nnU-Net raw dataset (dataset.json, imagesTr, labelsTr, optional imagesTs) to MIND.

    Labels (labelsTr) are linked or copied (`link`: symlink, hardlink, copy). dataset.json is written
    last, so a dataset without it is an unfinished conversion.
    """
    src, dst = Path(src), Path(dst)
    meta = mind_dataset_json(io.read_json(src / "dataset.json"), params, str(src / "dataset.json"))
    summary = Summary()
    for sub in ("imagesTr", "imagesTs"):
        if (src / sub).is_dir():
            log(f"{sub}:")
            summary.merge(convert_images_folder(src / sub, dst / sub, params, slab, device, fp16, overwrite, log))
    labels = io.list_label_cases(src / "labelsTr")
    for path in labels.values():
        io.place_file(path, dst / "labelsTr" / path.name, link)
    io.write_json_atomic(meta, dst / "dataset.json")
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="nnU-Net raw dataset folder (with dataset.json) or a folder of <case>_0000.nii.gz")
    p.add_argument("dst", help="output dataset folder (dataset mode) or output images folder")
    p.add_argument("--radius", type=int, default=1, help="patch half-width r in voxels (default 1)")
    p.add_argument("--dilation", type=int, default=2, help="neighbour distance d in voxels (default 2)")
    p.add_argument("--patch", choices=PATCHES, default="box", help="patch weighting (default box)")
    p.add_argument("--sigma", type=float, default=0.8, help="Gaussian patch std in voxels (default 0.8)")
    p.add_argument("--slab", type=int, default=32, help="slices per block; bounds work memory (default 32)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="compute device (auto: cuda when available)")
    p.add_argument("--fp16", action="store_true", help="compute in float16 (CUDA only)")
    p.add_argument("--link", choices=("symlink", "hardlink", "copy"), default="symlink",
                   help="how labels reach the output dataset (default symlink)")
    p.add_argument("--overwrite", action="store_true", help="recompute cases whose outputs exist")


def run(args: argparse.Namespace) -> int:
    params = mind_dataset_json_entry(args.radius, args.dilation, args.patch, args.sigma)
    src = Path(args.src)
    if (src / "dataset.json").is_file():
        summary = convert_dataset(src, args.dst, params, args.slab, args.device, args.fp16, args.link,
                                  args.overwrite)
    else:
        summary = convert_images_folder(src, args.dst, params, args.slab, args.device, args.fp16, args.overwrite)
    print(f"descriptors: {len(summary.done)} converted, {len(summary.skipped)} already done, "
          f"{len(summary.failed)} failed")
    for case, err in summary.failed.items():
        print(f"  {case}: {err}")
    return 1 if summary.failed else 0
