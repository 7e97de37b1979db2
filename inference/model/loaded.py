"""The loaded model: the record every stage of the pipeline reads. Imports nothing of the engines, so
that they can all depend on it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.model.folder import Configuration

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class NetworkPlan:
    """The resolved engine settings of one model load."""
    backend: str     # "torch" or "openvino"
    precision: str   # "fp32", "bf16" or "fp16"
    batch_size: int  # tiles per network call
    reason: str = field(default="", compare=False)   # why this precision (engines.choice.precision_reason)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """torch autocast dtype for the torch backend (None: plain fp32)."""
        import torch
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    def describe(self) -> str:
        return f"{self.backend} {self.precision}, batch {self.batch_size}"



@dataclass
class LoadedModel:
    """Everything needed to segment: one network per fold, the configuration, the labels and the engine.

    `networks` are what the engine runs: OpenVINO compiled models on the numpy engine, torch modules on
    the torch engine (both map a (B, C, *patch) batch to (B, K, *patch) logits); `plan` says which
    engine, in which precision, and `engine` is it.
    """
    model_dir: Path
    networks: list
    config: Configuration
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    channel_names: list[str]
    labels: dict[str, int]
    file_ending: str
    mirror_axes: tuple[int, ...] | None
    folds: list[str]
    device: Any                       # a torch.device, or inference.device.HOST_CPU on the numpy engine
    plan: NetworkPlan
    engine: Any                       # the inference.engines.base.Engine that runs it
    mind_params: dict | None = None   # set for models on MIND-SSC descriptors (inference.mind)
    localizer: LoadedModel | None = None   # coarse model of localizer/ (inference.roi)

    @property
    def num_channels(self) -> int:
        """Channels the network takes."""
        return len(self.channel_names)

    @property
    def num_input_files(self) -> int:
        """Files per case: one image for a MIND model (its 12 descriptor channels are computed here)."""
        return 1 if self.mind_params is not None else self.num_channels

    @property
    def num_classes(self) -> int:
        return len(self.labels)
