"""Which OpenVINO CPU settings make a model's tiles faster with exact f32 output (issue 16's levers).

Run through `python -m benchmarks.studies.network_limit --openvino-levers` (that module owns the command line).

Every variant is a compile configuration of the same IR in f32; all are compiled once, then timed
interleaved in one process (each slot of a round runs every variant in turn on the same tiles; the
median and the minimum over rounds are kept, with the process's CPU time),
each on the same real tiles: a sample case preprocessed by the torch path and cut into tiles on the
sliding-window grid (denormals only show with real activations, never with random noise). Latency
variants run the tiles one after another on one request; throughput variants keep `requests` async
requests in flight (ov.AsyncInferQueue) over the same tiles. torch fp32 batch 1 on the same tiles is timed
in the same rounds as the reference, and every variant's logits are compared with torch's: argmax
agreement and max |logit difference|, and whether they equal the current setting's bit for bit.
Compile time (with and without a CACHE_DIR, i.e. a cached blob imported) and the first inference after
compile are measured on fresh ov.Core objects, also interleaved.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import load_text as load

# The configuration inference/networks/openvino_network.py compiles today: every variant below is this plus changes.
CURRENT = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


@dataclass
class Variant:
    name: str
    changes: dict = field(default_factory=dict)
    requests: int = 1   # >1: that many async requests in flight

    @property
    def config(self) -> dict:
        return {**CURRENT, **self.changes}


def variants(cores: int) -> list[Variant]:
    """The documented CPU plugin properties that plausibly matter for a 3D conv net on a few cores.

    Left out: ENABLE_HYPER_THREADING and SCHEDULING_CORE_TYPE (no effect without SMT siblings or hybrid
    cores), MODEL_DISTRIBUTION_POLICY / ENABLE_TENSOR_PARALLEL (multi-socket), sparse-weight, dynamic-
    quantization and KV-cache properties (int8 / LLM kernels only), bf16/f16 (not exact).
    """
    streams = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": cores, "INFERENCE_NUM_THREADS": cores}
    return [
        Variant("current: LATENCY, f32"),
        Variant("CPU_DENORMALS_OPTIMIZATION=True", {"CPU_DENORMALS_OPTIMIZATION": True}),
        Variant("INFERENCE_NUM_THREADS=1", {"INFERENCE_NUM_THREADS": 1}),
        # the plugin's default on this machine, so an A/A check of the timing noise
        Variant(f"INFERENCE_NUM_THREADS={cores} (A/A: = current)", {"INFERENCE_NUM_THREADS": cores}),
        Variant("ENABLE_CPU_PINNING=False", {"ENABLE_CPU_PINNING": False}),
        Variant("TBB_PARTITIONER=STATIC", {"TBB_PARTITIONER": "STATIC"}),
        Variant("TBB_PARTITIONER=AUTO", {"TBB_PARTITIONER": "AUTO"}),
        Variant("EXECUTION_MODE_HINT=ACCURACY", {"EXECUTION_MODE_HINT": "ACCURACY"}),
        Variant(f"THROUGHPUT, {cores} streams x 1 thread, 1 request", streams),
        Variant(f"THROUGHPUT, {cores} streams x 1 thread, {cores} async requests", streams, requests=cores),
    ]



def real_tiles(model_dir: Path, sample: Path, count: int) -> np.ndarray:
    """`count` tiles (count, C, *patch) of `sample` preprocessed by the torch path, taken from the middle of
    the sliding-window grid (step 0.5, finer for a small case) outwards, so most hold anatomy."""
    from inference.files.cases import find_cases
    from inference.files.reading import read_case
    from inference.loading import load_model
    from inference.engines.torch_engine.preprocess import preprocess
    from inference.engines.torch_engine.sliding_window import pad_to_tile
    from inference.rules.tiling import tile_windows
    model = load_model(model_dir, device="cpu", backend="torch")
    cases, _ = find_cases(sample.parent, model.num_input_files)
    case = next(c for c in cases if c.channel_files[0] == sample)
    volume = read_case(case)
    data = preprocess(volume.data, volume.spacing, model, str(sample)).data
    data, _ = pad_to_tile(data, model.config.patch_size)
    step = 0.5
    windows = tile_windows(data.shape[1:], model.config.patch_size, step)
    while len(windows) < count and step > 1 / 16:  # a small case: a denser grid, still real tiles
        step /= 2
        windows = tile_windows(data.shape[1:], model.config.patch_size, step)
    if len(windows) < count:
        raise ValueError(f"{sample}: only {len(windows)} distinct tiles, {count} asked for")
    middle = len(windows) // 2
    order = sorted(range(len(windows)), key=lambda i: abs(i - middle))
    chosen = sorted(order[:count])
    return np.stack([data[(slice(None), *windows[i])].numpy() for i in chosen]).astype(np.float32)


def torch_logits(model_dir: Path, tiles: np.ndarray):
    """The torch fp32 network of fold 0 and a function running all tiles at batch 1 -> logits."""
    from inference.loading import load_model
    network = load_model(model_dir, device="cpu", backend="torch").networks[0]
    inputs = [torch.from_numpy(t[None]) for t in tiles]

    def run(indices=range(len(tiles))) -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate([network(inputs[i]).numpy() for i in indices])
    return run


def activation_denormals(model_dir: Path, tile: np.ndarray) -> tuple[int, int]:
    """(denormal values, all values) over every module output of the torch fp32 network on one tile: whether
    flushing denormals can matter at all for this model's real activations."""
    from inference.loading import load_model
    network = load_model(model_dir, device="cpu", backend="torch").networks[0]
    tiny = torch.finfo(torch.float32).tiny
    counts = [0, 0]

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            counts[0] += int(((output != 0) & (output.abs() < tiny)).sum())
            counts[1] += output.numel()
    handles = [m.register_forward_hook(count) for m in network.modules() if m is not network]
    with torch.inference_mode():
        network(torch.from_numpy(tile[None]))
    for h in handles:
        h.remove()
    return counts[0], counts[1]


def compile_ir(core, xml: Path, config: dict, cache_dir: str | None = None):
    """Read the IR, fix batch 1 (as inference/networks/openvino_network.py does), compile with `config`."""
    import openvino as ov
    model = core.read_model(str(xml))
    shape = model.input(0).get_partial_shape()
    model.reshape({model.input(0): ov.PartialShape([1, *shape[1:]])})
    return core.compile_model(model, "CPU", {**config, **({"CACHE_DIR": cache_dir} if cache_dir else {})})


def runner(compiled, requests: int, tiles: np.ndarray):
    """A function running the tiles at `indices` (default all) through `compiled` -> logits (count, K, *patch)
    of all tiles (those not run keep their last values)."""
    import openvino as ov
    out = np.empty((len(tiles), *compiled.output(0).get_shape()[1:]), np.float32)
    if requests == 1:
        request = compiled.create_infer_request()

        def run(indices=range(len(tiles))) -> np.ndarray:
            for i in indices:
                request.infer({0: tiles[i][None]}, share_inputs=True)
                out[i] = request.get_output_tensor(0).data[0]
            return out
        return run
    queue = ov.AsyncInferQueue(compiled, requests)

    def done(request, i):
        out[i] = request.get_output_tensor(0).data[0]
    queue.set_callback(done)

    def run_async(indices=range(len(tiles))) -> np.ndarray:
        for i in indices:
            queue.start_async({0: tiles[i][None]}, userdata=i, share_inputs=True)
        queue.wait_all()
        return out
    return run_async


def agreement(logits: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(share of voxels whose argmax equals the reference's, max |logit difference|)."""
    return (float((logits.argmax(1) == reference.argmax(1)).mean()),
            float(np.abs(logits.astype(np.float64) - reference).max()))


def denormal_share(x: np.ndarray) -> float:
    tiny = np.finfo(np.float32).tiny
    return float(((x != 0) & (np.abs(x) < tiny)).mean())


def measure(model_dir: Path, xml: Path, sample: Path, count: int, rounds: int, compile_rounds: int,
            log=print) -> tuple[list[str], dict]:
    """Run the study; returns the table's lines and a summary {variant: (median ms/tile, ratio)}."""
    import openvino as ov
    cores = len(os.sched_getaffinity(0))
    tiles = real_tiles(model_dir, sample, count)
    log(f"{count} tiles {tiles.shape[1:]} of {sample.name} (preprocessed by the torch path); "
        f"denormal inputs {denormal_share(tiles):.2e} (load {load()})")
    run_torch = torch_logits(model_dir, tiles)
    reference = run_torch().astype(np.float64)
    log(f"torch fp32 reference: logits |max| {np.abs(reference).max():.1f}, denormal logits "
        f"{denormal_share(reference.astype(np.float32)):.2e}")
    denormal, values = activation_denormals(model_dir, tiles[len(tiles) // 2])
    activations = (f"torch fp32 activations (every module's output, middle tile): {denormal} denormal values "
                   f"of {values}")
    log(activations)

    chosen = variants(cores)
    core = ov.Core()
    runs, exact, built = {}, {}, {}
    for v in chosen:
        compiled = compile_ir(core, xml, v.config)
        # what the plugin made of the hints: streams x threads, pinning
        built[v.name] = (f"{compiled.get_property('NUM_STREAMS')} stream(s), "
                         f"{compiled.get_property('INFERENCE_NUM_THREADS')} threads in all"
                         f"{', pinned' if compiled.get_property('ENABLE_CPU_PINNING') else ''}")
        runs[v.name] = runner(compiled, v.requests, tiles)
        runs[v.name]()  # warm-up
        logits = runs[v.name]().copy()
        agree, diff = agreement(logits, reference)
        exact[v.name] = (agree, diff, logits)
        log(f"compiled {v.name} ({built[v.name]}): agree {agree:.4f}, max |diff| {diff:.2e}")
    base_logits = exact[chosen[0].name][2]

    # Interleaved finely: a round walks the tiles in slots of `cores` tiles (what the throughput variants keep
    # in flight), and each slot runs every variant in turn, each round starting one variant later; so a
    # load change on this shared machine (seconds) hits all variants alike. A variant's round time is the sum
    # of its slots; wall and process CPU time (all threads) are kept.
    order = [("torch fp32 batch 1", run_torch), *runs.items()]
    slots = [range(i, min(i + cores, count)) for i in range(0, count, cores)]
    times: dict[str, list[float]] = {name: [] for name, _ in order}
    cpu: dict[str, list[float]] = {name: [] for name, _ in order}
    loads: dict[str, list[str]] = {name: [] for name, _ in order}
    for r in range(rounds):
        wall_sum = dict.fromkeys(times, 0.0)
        cpu_sum = dict.fromkeys(times, 0.0)
        for slot in slots:
            for name, fn in order[r % len(order):] + order[:r % len(order)]:
                start, start_cpu = time.perf_counter(), time.process_time()
                fn(slot)
                wall_sum[name] += time.perf_counter() - start
                cpu_sum[name] += time.process_time() - start_cpu
        for name in times:
            times[name].append(1000 * wall_sum[name] / count)
            cpu[name].append(1000 * cpu_sum[name] / count)
            loads[name].append(load())
            log(f"round {r + 1}/{rounds} {name}: {times[name][-1]:.1f} ms/tile, CPU {cpu[name][-1]:.1f} ms/tile "
                f"(load {loads[name][-1]})")

    # OpenVINO sets FTZ/DAZ per thread when flushing denormals: if that leaked into the shared thread pool,
    # the current config's output would change after the flushing variants ran; say whether it did.
    leaks = [f"current config's logits bitwise unchanged after all variants ran: "
             f"{np.array_equal(runs[chosen[0].name](), base_logits)}",
             f"torch's logits bitwise unchanged after all variants ran: "
             f"{np.array_equal(run_torch(), reference.astype(np.float32))}"]
    for line in leaks:
        log(line)
    torch_ms = statistics.median(times["torch fp32 batch 1"])
    lines = ["| variant (changes to the current config) | compiled as | requests | ms/tile median | min | max | x torch fp32 "
             "(median) | x torch fp32, paired per round | x current (median) | x current, paired per round (median) | CPU ms/tile median | argmax agree | "
             "max abs logit diff | bitwise = current | load at last round |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    current_ms = statistics.median(times[chosen[0].name])

    def paired(name: str, against: str = chosen[0].name) -> float:
        """Median over rounds of against / variant in the same round: the load a round saw cancels out."""
        return statistics.median(c / v for c, v in zip(times[against], times[name]))
    summary = {}
    for name in times:
        ms = statistics.median(times[name])
        summary[name] = (ms, torch_ms / ms)
        if name == "torch fp32 batch 1":
            lines.append(f"| {name} (reference) | {torch.get_num_threads()} threads | 1 | {ms:.1f} | {min(times[name]):.1f} | {max(times[name]):.1f} | "
                         f"1.00 | 1.00 | {current_ms / ms:.2f} | {paired(name):.2f} | "
                         f"{statistics.median(cpu[name]):.1f} | 1.0000 | 0 | - | {loads[name][-1]} |")
            continue
        v = next(v for v in chosen if v.name == name)
        agree, diff, logits = exact[name]
        changes = ", ".join(f"{k}={val}" for k, val in v.changes.items()) or "(none)"
        lines.append(f"| {name} [{changes}] | {built[name]} | {v.requests} | {ms:.1f} | {min(times[name]):.1f} | {max(times[name]):.1f} | "
                     f"{torch_ms / ms:.2f} | {paired(name, 'torch fp32 batch 1'):.2f} | {current_ms / ms:.2f} | {paired(name):.2f} | "
                     f"{statistics.median(cpu[name]):.1f} | {agree:.4f} | {diff:.2e} | "
                     f"{'yes' if np.array_equal(logits, base_logits) else 'no'} | {loads[name][-1]} |")
    lines += [""] + [f"- {line}" for line in [activations, *leaks]]
    lines += ["", "### Compile and first inference (fresh ov.Core each, current config, batch 1)", ""]
    lines += compile_study(xml, tiles[:1], compile_rounds, log)
    return lines, summary


def compile_study(xml: Path, tile: np.ndarray, rounds: int, log) -> list[str]:
    """Compile time without a cache, with an empty CACHE_DIR (compile + export), from a filled one (import);
    the first inference after each, and the second (steady state)."""
    import openvino as ov
    kinds = ("no cache", "CACHE_DIR, empty (compile + export)", "CACHE_DIR, filled (import)")
    results = {k: {"compile": [], "first": [], "second": []} for k in kinds}
    for r in range(rounds):
        with tempfile.TemporaryDirectory(prefix="ov-cache-") as cache:
            for kind, cache_dir in zip(kinds, (None, cache, cache)):
                core = ov.Core()
                start = time.perf_counter()
                compiled = compile_ir(core, xml, CURRENT, cache_dir)
                results[kind]["compile"].append(time.perf_counter() - start)
                request = compiled.create_infer_request()
                for step in ("first", "second"):
                    start = time.perf_counter()
                    request.infer({0: tile}, share_inputs=True)
                    results[kind][step].append(time.perf_counter() - start)
                log(f"round {r + 1}/{rounds} {kind}: compile {results[kind]['compile'][-1]:.2f} s, first inference "
                    f"{1000 * results[kind]['first'][-1]:.0f} ms, second {1000 * results[kind]['second'][-1]:.0f} ms "
                    f"(load {load()})")
                del request, compiled, core
    lines = ["| compile | read+reshape+compile s (median) | first inference ms | second inference ms | load |",
             "|---|---:|---:|---:|---|"]
    for kind in kinds:
        m = {k: statistics.median(v) for k, v in results[kind].items()}
        lines.append(f"| {kind} | {m['compile']:.2f} | {1000 * m['first']:.0f} | {1000 * m['second']:.0f} | {load()} |")
    return lines
