"""The seam between the pipeline (inference.api) and the two engines: what every engine does to a case.

A case goes read -> (localise) -> preprocess -> network -> export -> write. The pipeline and the ROI
step are written once, above this seam; the three array stages differ between the engines and are
the methods below. A model load chooses its engine once (inference.engines.choice) and carries it
(`LoadedModel.engine`); nothing else asks which engine runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from inference.rules.preprocessing import Preprocessed
from inference.rules.region import Region

if TYPE_CHECKING:
    from inference.model.loaded import LoadedModel

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Window:
    """How the sliding window runs: step as a fraction of the patch, the mirror axes of test-time
    augmentation (None: none), and a callback told (tiles done, tiles in all)."""
    step_size: float = 0.5
    mirror_axes: Sequence[int] | None = None
    progress: Progress | None = None


class Engine(Protocol):
    """The array work of one case on one engine. `budget`: the torch engine's CUDA memory budget for a
    folder run (inference.memory.gpu_budget), None elsewhere."""
    name: str
    exports_in_slabs: bool   # export works in slabs of planes (True) or in chunks of classes (False)

    def prepare(self, model: LoadedModel) -> None:
        """Start what the model's networks need before their first call, in the background (a model
        loaded to compile lazily, such as a localiser); nothing where there is nothing to start."""

    def preprocess(self, image: np.ndarray, spacing: tuple[float, ...], model: LoadedModel, source: str,
                   budget: Any = None, shared: dict | None = None) -> Preprocessed:
        """Image (C, Z, Y, X) as read -> the network input in the plans' axis order. `shared`: a memo for
        this image (one per case) in which an engine may keep work that a second model (the localiser's
        and the model's) can reuse; an engine may ignore it."""

    def predict_logits(self, prep: Preprocessed, model: LoadedModel, window: Window, source: str,
                       budget: Any = None, region: Region | None = None) -> Any:
        """Sliding-window logits (K, X, Y, Z) of the preprocessed image, in the engine's array type.
        With a `region`: only the whole image's tiles that meet `region.network` run, and the result is
        RegionLogits of the box they cover (inference.rules.region)."""

    def export(self, logits: Any, prep: Preprocessed, model: LoadedModel, source: str,
               budget: Any = None, region: Region | None = None) -> np.ndarray:
        """Logits -> label map (Z, Y, X) uint8 on the input's grid; with a `region` (and its
        RegionLogits), labels inside `region.box` as the whole image's export gives them, 0 outside."""

    def foreground(self, logits: Any) -> np.ndarray:
        """Where the argmax of the logits is not background, as a numpy mask (the ROI localiser's)."""

    def memory_budget(self, budget_mib: float | None) -> Any:
        """A memory budget for a folder run, or None where the engine keeps none."""

    def synchronize(self) -> None:
        """Wait for queued device work (before a stage's clock is read)."""

    def release(self) -> None:
        """Give cached device memory back after a case."""
