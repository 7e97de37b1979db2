"""A region of interest on both grids, for prediction that skips tiles (inference.roi): the box of the
input where labels are wanted, the part of the network grid the export reads for it, and the logits of
the tiles run for it.

The network runs on the whole image's preprocessed grid (same crop, same normalisation, same tile
grid), only on the tiles that meet the region; every tile that covers a voxel of the region is run, so
there the logits are the whole-image run's, term for term.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from inference.rules.preprocessing import transposed

# Network voxels added on each side of the mapped box: linear interpolation reads one neighbour past
# floor(source); one more covers float32 rounding of the source coordinate.
EXPORT_HALO = 2


@dataclass(frozen=True)
class Region:
    """box: [start, stop) per input array axis (Z, Y, X), the labels wanted; cropped: that box in the
    plans' axis order, relative to the nonzero crop (the export's output grid); network: the box of the
    network grid (plans order) whose logits the export reads for it; network_shape: the whole grid."""
    box: tuple[tuple[int, int], ...]
    cropped: tuple[tuple[int, int], ...]
    network: tuple[tuple[int, int], ...]
    network_shape: tuple[int, ...]
    grid: str = "whole"     # the tiles run for it: the whole image's that meet it, or a box grid's (tiling.tile_plan)


@dataclass
class RegionLogits:
    """Logits (K, *shape) of the covered part of the network grid (the tiles run), from `start` on."""
    data: Any
    start: tuple[int, ...]


def network_region(box: Sequence[slice], transpose_forward: Sequence[int], bbox: Sequence[tuple[int, int]],
                   network_shape: Sequence[int], grid: str = "whole") -> Region | None:
    """The Region of an input box (slices (Z, Y, X)) for an image preprocessed with crop `bbox` (plans
    order) to `network_shape`; None when the box misses the nonzero crop (all background there)."""
    box_t = transposed([(s.start, s.stop) for s in box], transpose_forward)
    cropped, network = [], []
    for (lo, hi), (a, b), n_net in zip(box_t, bbox, network_shape):
        lo_c, hi_c = max(lo, a) - a, min(hi, b) - a
        if lo_c >= hi_c:
            return None
        # export's source coordinate of output i is (i + 0.5) * n_net / n_crop - 0.5 (linear) or
        # floor((i + 0.5) * n_net / n_crop) (nearest): both lie within [i, i + 1) * scale, +- 1
        scale = n_net / (b - a)
        network.append((max(int(math.floor(lo_c * scale)) - EXPORT_HALO, 0),
                        min(int(math.ceil(hi_c * scale)) + EXPORT_HALO, int(n_net))))
        cropped.append((lo_c, hi_c))
    return Region(tuple((s.start, s.stop) for s in box), tuple(cropped), tuple(network),
                  tuple(int(n) for n in network_shape), grid)
