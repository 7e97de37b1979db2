"""OpenVINO IR of a fold's network: written at import, compiled for the CPU at load.

The IR keeps the batch axis open and the channel and tile axes fixed; at load the model is reshaped to a
static batch (cheap, and OpenVINO's CPU plugin runs static shapes fastest) and compiled with an explicit
inference precision: without the hint OpenVINO silently picks bf16 on CPUs that have it.
Weights are stored in float32 (no fp16 compression), so f32 inference matches torch fp32.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from inference import InferenceError

OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def convert_to_ir(network: torch.nn.Module, num_channels: int, patch_size: Sequence[int], xml_path: Path) -> None:
    """Trace `network` (fp32, eval) into IR at `xml_path` (+ .bin), input (any batch, C, *patch)."""
    import openvino as ov
    import warnings
    example = torch.zeros((1, num_channels, *patch_size))
    shape = ov.PartialShape([-1, num_channels, *patch_size])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notices, raised inside OpenVINO
        with torch.no_grad():
            converted = ov.convert_model(network.float().eval(), example_input=example, input=[shape])
    ov.save_model(converted, str(xml_path), compress_to_fp16=False)


class OpenVINONetwork:
    """A compiled fold network with the torch module's calling convention: (B, C, *patch) -> (B, K, *patch).

    Batches smaller than the compiled one (the last tiles of an image) are zero-padded and cut back;
    larger ones run in compiled-size chunks.
    """

    def __init__(self, xml_path: Path, batch_size: int, precision: str = "fp32", threads: int | None = None):
        import openvino as ov
        if precision not in OPENVINO_PRECISION:
            raise InferenceError(f"OpenVINO runs fp32 or bf16 on the CPU, not {precision}")
        try:
            model = ov.Core().read_model(str(xml_path))
            shape = model.input(0).get_partial_shape()
            model.reshape({model.input(0): ov.PartialShape([batch_size, *shape[1:]])})
        except RuntimeError as e:
            raise InferenceError(f"{xml_path}: not a readable OpenVINO IR ({str(e).splitlines()[0]})") from None
        config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.batch_size = batch_size
        self.input_shape = tuple(int(d) for d in self.compiled.input(0).get_shape())

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        if tuple(tiles.shape[1:]) != self.input_shape[1:]:
            raise ValueError(f"OpenVINO network compiled for {self.input_shape}, got {tuple(tiles.shape)}")
        if tiles.shape[0] > self.batch_size:
            return torch.cat([self(chunk) for chunk in tiles.split(self.batch_size)])
        count = tiles.shape[0]
        batch = tiles.detach().to(torch.float32).numpy()
        if count < self.batch_size:
            batch = np.concatenate([batch, np.zeros((self.batch_size - count, *batch.shape[1:]), batch.dtype)])
        # share_inputs avoids a copy of the tile; outputs are copied out, since the next call reuses them.
        self.request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True)
        out = self.request.get_output_tensor(0).data
        return torch.from_numpy(np.array(out[:count], copy=True))
