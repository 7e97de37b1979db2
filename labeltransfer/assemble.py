"""`assemble`: build the final nnU-Net raw training dataset (imagesTr, labelsTr, dataset.json) from
several sources, e.g. the pseudo-labelled MRI sequences plus the labelled CT scans (paper, step 6).

Each --source is `images=DIR,labels=DIR[,keep=FILE][,prefix=STR][,name=STR]`: DIR of single-channel
`<case>_0000.nii.gz`, DIR of `<case>.nii.gz`, an optional keep list (one case id per line, e.g. from
`filter`) and an optional prefix that makes case ids unique across sources. Every case is checked:
its label exists, has the image's geometry (size, spacing, origin, direction) and only values 0..13.
Cases that fail are left out and listed; a case id that two sources share is an error.

Files are symlinked (default), hard-linked or copied. dataset.json gets one channel named "zscore"
(nnU-Net's z-score normalisation for MRI and CT alike, as in the paper), the 13 FLARE labels and a
"sources" entry with the case counts per source.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from flare.labels import NUM_CLASSES, dataset_json_labels
from labeltransfer import io

DATASET_NAME_RE = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_\-]+$")


@dataclass
class Source:
    images: Path
    labels: Path
    keep: Path | None = None
    prefix: str = ""
    name: str = ""

    @classmethod
    def parse(cls, spec: str) -> Source:
        """From `images=DIR,labels=DIR[,keep=FILE][,prefix=STR][,name=STR]`."""
        fields = {}
        for part in spec.split(","):
            key, sep, val = part.partition("=")
            if not sep or key.strip() not in ("images", "labels", "keep", "prefix", "name"):
                raise ValueError(f"--source {spec!r}: expected images=DIR,labels=DIR[,keep=FILE][,prefix=STR]"
                                 f"[,name=STR], got {part!r}")
            fields[key.strip()] = val.strip()
        if "images" not in fields or "labels" not in fields:
            raise ValueError(f"--source {spec!r}: images= and labels= are required")
        return cls(Path(fields["images"]), Path(fields["labels"]),
                   Path(fields["keep"]) if fields.get("keep") else None, fields.get("prefix", ""),
                   fields.get("name", "") or Path(fields["images"]).parent.name + "/" + Path(fields["images"]).name)


def read_keep_list(path: Path) -> set[str]:
    if not path.is_file():
        raise io.CaseError(f"{path}: keep list not found")
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def check_case(image_path: Path, label_path: Path, check_values: bool = True) -> None:
    """Raise CaseError unless the label exists, matches the image's geometry and holds only 0..13."""
    if not label_path.exists():
        raise io.CaseError(f"{label_path}: label not found")
    img = io.read_header(image_path)
    if img.GetNumberOfComponents() != 1:
        raise io.CaseError(f"{image_path}: expected a scalar image")
    lab = io.read_image(label_path) if check_values else io.read_header(label_path)
    why = io.same_geometry(img, lab)
    if why:
        raise io.CaseError(f"{label_path}: geometry differs from {image_path.name}: {why}")
    if check_values:
        arr = sitk.GetArrayViewFromImage(lab)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > NUM_CLASSES - 1 or not np.all(np.mod(arr, 1) == 0):
            raise io.CaseError(f"{label_path}: values must be integers 0..{NUM_CLASSES - 1}, found range "
                               f"[{lo:g}, {hi:g}]")


def assemble(out_dir: str | Path, sources: list[Source], link: str = "symlink", check_values: bool = True,
             log=print) -> tuple[dict[str, int], dict[str, str]]:
    """Create the dataset at out_dir. Returns ({source name: cases}, {case: why it was left out}).

    dataset.json is written last (atomically): a folder without it is unfinished. The folder belongs to
    assemble: a rerun replaces its files and removes cases that are no longer in the sources.
    """
    out_dir = Path(out_dir)
    if not DATASET_NAME_RE.match(out_dir.name):
        raise ValueError(f"{out_dir}: nnU-Net needs a folder name like Dataset503_FLAREMRICT")
    plan: dict[str, tuple[Path, Path, str]] = {}   # out case -> (image, label, source name)
    left_out: dict[str, str] = {}
    for src in sources:
        images = io.list_image_cases(src.images)
        keep = read_keep_list(src.keep) if src.keep else None
        if keep is not None:
            unknown = sorted(keep - set(images))
            for case in unknown:
                left_out[src.prefix + case] = f"in keep list {src.keep} but no image in {src.images}"
        for case, files in images.items():
            if keep is not None and case not in keep:
                continue
            out_case = src.prefix + case
            if len(files) != 1:
                left_out[out_case] = f"{src.images}: {len(files)} channels, expected one (_0000)"
                continue
            if out_case in plan:
                raise ValueError(f"case id {out_case!r} comes from two sources ({plan[out_case][2]} and {src.name}); "
                                 f"give one of them a prefix=")
            plan[out_case] = (files[0], src.labels / f"{case}{io.FILE_ENDING}", src.name)
    counts: dict[str, int] = {s.name: 0 for s in sources}
    placed: set[str] = set()
    for n, (case, (image, label, name)) in enumerate(sorted(plan.items()), 1):
        try:
            check_case(image, label, check_values)
        except io.CaseError as e:
            left_out[case] = str(e)
            continue
        io.place_file(image, out_dir / "imagesTr" / f"{case}_0000{io.FILE_ENDING}", link)
        io.place_file(label, out_dir / "labelsTr" / f"{case}{io.FILE_ENDING}", link)
        counts[name] += 1
        placed.update({f"{case}_0000{io.FILE_ENDING}", f"{case}{io.FILE_ENDING}"})
        if n % 200 == 0 or n == len(plan):
            log(f"  [{n}/{len(plan)}] placed")
    for sub in ("imagesTr", "labelsTr"):  # the folder belongs to assemble: drop cases of an earlier run
        for p in (out_dir / sub).glob(f"*{io.FILE_ENDING}"):
            if p.name not in placed:
                p.unlink()
                log(f"  removed stale {sub}/{p.name}")
    total = sum(counts.values())
    if total == 0:
        raise ValueError(f"{out_dir}: no usable case in the sources")
    meta = {"channel_names": {"0": "zscore"}, "labels": dataset_json_labels(), "numTraining": total,
            "file_ending": io.FILE_ENDING, "sources": counts}
    io.write_json_atomic(meta, out_dir / "dataset.json")
    return counts, left_out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="new raw dataset folder, e.g. $nnUNet_raw/Dataset503_FLAREMRICT")
    p.add_argument("--source", action="append", required=True, metavar="SPEC",
                   help="images=DIR,labels=DIR[,keep=FILE][,prefix=STR][,name=STR] (repeat per source)")
    p.add_argument("--link", choices=("symlink", "hardlink", "copy"), default="symlink")
    p.add_argument("--no-value-check", action="store_true",
                   help="check only label headers (faster), not that values are in 0..13")


def run(args: argparse.Namespace) -> int:
    sources = [Source.parse(s) for s in args.source]
    counts, left_out = assemble(args.out_dir, sources, args.link, not args.no_value_check)
    print(f"assemble: {sum(counts.values())} cases in {args.out_dir}: "
          + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if left_out:
        print(f"left out {len(left_out)}:")
        for case, why in sorted(left_out.items()):
            print(f"  {case}: {why}")
    return 0
