"""The numpy engine behind the seam of inference.engines.base: numpy arrays, OpenVINO networks."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from inference.engines.base import Window
from inference.engines.numpy_engine.export import logits_to_segmentation
from inference.engines.numpy_engine.preprocess import preprocess
from inference.engines.numpy_engine.sliding_window import predict_logits
from inference.rules.preprocessing import Preprocessed
from inference.rules.region import Region, RegionLogits

if TYPE_CHECKING:
    from inference.model.loaded import LoadedModel


class NumpyEngine:
    """The default CPU engine. It keeps no memory budget and has no device to synchronise."""
    name = "numpy"
    exports_in_slabs = True   # the memory model's export term (inference.memory.cost)

    def prepare(self, model: LoadedModel) -> None:
        for network in model.networks:      # OpenVINO networks loaded with compile_at_load=False
            start = getattr(network, "start_compiling", None)   # any other callable network is ready
            if start is not None:
                start()

    def preprocess(self, image, spacing, model: LoadedModel, source: str, budget=None,
                   shared: dict | None = None) -> Preprocessed:
        return preprocess(np.asarray(image), spacing, model, source, shared)

    def predict_logits(self, prep: Preprocessed, model: LoadedModel, window: Window, source: str,
                       budget=None, region: Region | None = None) -> np.ndarray | RegionLogits:
        return predict_logits(prep.data, model.networks, model.num_classes, model.config.patch_size,
                              window.step_size, window.mirror_axes, window.progress, model.plan.batch_size,
                              None if region is None else region.network,
                              "whole" if region is None else region.grid)

    def export(self, logits: np.ndarray | RegionLogits, prep: Preprocessed, model: LoadedModel, source: str,
               budget=None, region: Region | None = None) -> np.ndarray:
        return logits_to_segmentation(logits, prep, model, region)

    def foreground(self, logits: np.ndarray) -> np.ndarray:
        return logits.argmax(0) > 0

    def memory_budget(self, budget_mib):
        return None

    def synchronize(self) -> None:
        pass

    def release(self) -> None:
        pass
