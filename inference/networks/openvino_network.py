"""OpenVINO IR of a fold's network: written at import, compiled for the CPU at load.

The IR keeps the batch axis open and the channel and tile axes fixed; at load the model is reshaped to a
static batch (cheap, and OpenVINO's CPU plugin runs static shapes fastest) and compiled with an explicit
inference precision: without the hint OpenVINO silently picks bf16 on CPUs that have it.
Weights are stored in float32 (no fp16 compression), so f32 inference matches torch fp32.

The IR also carries the two facts inference needs from the fold's checkpoint (its configuration name and
the mirror axes test-time augmentation may use), in its runtime info under "nnunet", so the numpy engine
loads a fold without torch. IR written before that still loads: the checkpoint is then read with torch.

Start-up (every FLARE case is a fresh container): compiling starts in a background thread at load and the
first call waits for it, so the main model compiles while the image is read; a localiser's compile waits
until a case needs it (inference.roi), since most cases do not. Where
FLARE_OPENVINO_CACHE names a folder holding a compile cache for this very CPU and OpenVINO version
(compile_cache_dir; the image prepares one at build time), compiling reads it instead; on any other CPU
that folder does not exist and the model compiles as without a cache (nothing is written at run time).

This module imports neither torch nor OpenVINO at import time; torch only where a torch tensor comes in.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from inference import InferenceError

if TYPE_CHECKING:
    import torch

OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}
METADATA_KEY = "nnunet"   # runtime-info section of the IR holding checkpoint facts (see the docstring)
CACHE_ENV = "FLARE_OPENVINO_CACHE"   # root of compile caches, one subfolder per CPU (compile_cache_dir)


def cpu_cache_key() -> str:
    """Names the compile cache of this CPU and OpenVINO version: a blob compiled for another instruction
    set is never offered to this one."""
    import openvino as ov

    from inference.device import cpu_flags
    text = " ".join([ov.get_version(), *sorted(cpu_flags())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compile_cache_dir(create: bool = False) -> str | None:
    """This CPU's compile cache under $FLARE_OPENVINO_CACHE if it exists (None: compile without one).
    `create` makes it (at image build time; never at run time, where a fresh container would pay for
    writing a cache it throws away)."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        return None
    folder = Path(root) / cpu_cache_key()
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return str(folder) if folder.is_dir() else None


def convert_to_ir(network: torch.nn.Module, num_channels: int, patch_size: Sequence[int], xml_path: Path,
                  metadata: dict | None = None) -> None:
    """Trace `network` (fp32, eval) into IR at `xml_path` (+ .bin), input (any batch, C, *patch).

    `metadata` (JSON-able values) is stored in the IR's runtime info, section METADATA_KEY.
    """
    import warnings

    import openvino as ov
    import torch
    example = torch.zeros((1, num_channels, *patch_size))
    shape = ov.PartialShape([-1, num_channels, *patch_size])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notices, raised inside OpenVINO
        with torch.no_grad():
            converted = ov.convert_model(network.float().eval(), example_input=example, input=[shape])
    for key, value in (metadata or {}).items():
        converted.set_rt_info(json.dumps(value), [METADATA_KEY, key])
    ov.save_model(converted, str(xml_path), compress_to_fp16=False)


def read_ir(xml_path: Path):
    """(ov.Model, its checkpoint facts) of an IR file; an unreadable file is an InferenceError naming it."""
    import openvino as ov
    try:
        model = ov.Core().read_model(str(xml_path))
        return model, read_metadata(model)
    except (RuntimeError, ValueError) as e:
        raise InferenceError(f"{xml_path}: not a readable OpenVINO IR ({str(e).splitlines()[0]})") from None


def read_metadata(model) -> dict:
    """The METADATA_KEY section of a read ov.Model's runtime info ({} for IR written without it)."""
    if not model.has_rt_info([METADATA_KEY]):
        return {}
    section = model.get_rt_info()[METADATA_KEY]
    return {key: json.loads(model.get_rt_info([METADATA_KEY, key]).astype(str)) for key in section}


class OpenVINONetwork:
    """A compiled fold network: (B, C, *patch) -> (B, K, *patch) float32, numpy in and out (torch tensors
    are accepted and returned as tensors too).

    Batches smaller than the compiled one (the last tiles of an image) are zero-padded and cut back;
    larger ones run in compiled-size chunks. `metadata` is the IR's checkpoint facts (read_metadata).
    """

    def __init__(self, xml_path: Path, batch_size: int, precision: str = "fp32", threads: int | None = None,
                 model=None, compile_at_load: bool = True):
        """`model`: the ov.Model already read from `xml_path` (read_ir), to skip reading it again.
        `compile_at_load` False: the compile starts at start_compiling() or the first call (a network a
        case may not need, such as a localiser, then costs a fresh process nothing)."""
        import openvino as ov
        if precision not in OPENVINO_PRECISION:
            raise InferenceError(f"OpenVINO runs fp32 or bf16 on the CPU, not {precision}")
        if model is None:
            model, self.metadata = read_ir(xml_path)
        else:
            self.metadata = read_metadata(model)
        try:
            shape = model.input(0).get_partial_shape()
            model.reshape({model.input(0): ov.PartialShape([batch_size, *shape[1:]])})
        except (RuntimeError, ValueError) as e:
            raise InferenceError(f"{xml_path}: cannot be set to batch {batch_size} ({str(e).splitlines()[0]})") from None
        config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        cache = compile_cache_dir()
        if cache:
            config["CACHE_DIR"] = cache
        self.xml_path = xml_path
        self.batch_size = batch_size
        self.input_shape = tuple(int(d) for d in model.input(0).get_shape())
        self._ready: Future = Future()
        self._to_compile = (ov.Core(), model, config)
        self._start_lock = threading.Lock()
        self._started = False
        if compile_at_load:
            self.start_compiling()

    def start_compiling(self) -> None:
        """Start compiling in a background thread (once; later calls do nothing)."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
        # Not a daemon: the interpreter waits for it at exit. A daemon thread still inside OpenVINO's
        # compile when a short script ends (load a model, exit) crashed the process at teardown
        # ("terminate called without an active exception", or a segmentation fault).
        threading.Thread(target=self._compile, args=self._to_compile, daemon=False,
                         name=f"compile {self.xml_path.parent.name}").start()

    def _compile(self, core, model, config: dict) -> None:
        try:
            compiled = core.compile_model(model, "CPU", config)
            self._ready.set_result((compiled, compiled.create_infer_request()))
        except Exception as e:  # noqa: BLE001 - handed to the first call, which raises it as InferenceError
            self._ready.set_exception(e)
        self._to_compile = None    # the ov.Model is not needed past compiling

    def _compiled(self):
        """(compiled model, infer request), waiting for the background compile (started here if not yet)."""
        self.start_compiling()
        try:
            return self._ready.result()
        except (RuntimeError, ValueError) as e:
            raise InferenceError(f"{self.xml_path}: OpenVINO could not compile it for this CPU "
                                 f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None

    @property
    def compiled(self):
        return self._compiled()[0]

    @property
    def request(self):
        return self._compiled()[1]

    def __call__(self, tiles):
        if isinstance(tiles, np.ndarray):
            return self.run(tiles)
        import torch
        return torch.from_numpy(self.run(tiles.detach().to(torch.float32).numpy()))

    def run(self, tiles: np.ndarray) -> np.ndarray:
        if tuple(tiles.shape[1:]) != self.input_shape[1:]:
            raise ValueError(f"OpenVINO network compiled for {self.input_shape}, got {tuple(tiles.shape)}")
        if tiles.shape[0] > self.batch_size:
            return np.concatenate([self.run(tiles[i:i + self.batch_size])
                                   for i in range(0, tiles.shape[0], self.batch_size)])
        count = tiles.shape[0]
        batch = np.ascontiguousarray(tiles, dtype=np.float32)
        if count < self.batch_size:
            batch = np.concatenate([batch, np.zeros((self.batch_size - count, *batch.shape[1:]), batch.dtype)])
        # share_inputs avoids a copy of the tile; outputs are copied out, since the next call reuses them.
        self.request.infer({0: batch}, share_inputs=True)
        out = self.request.get_output_tensor(0).data
        return np.array(out[:count], copy=True)
