"""How close the network stage gets to this machine's limit: FLOPs per tile, achieved GFLOP/s per backend,
precision and batch, and the machine's peak in the same precision.

    flock /tmp/flare-measure.lock python -m benchmarks.studies.network_limit [--models default small paper]
        [--backends torch openvino] [--precisions fp32 bf16] [--batches 1 2 4] [--repeats 3]
        [--levers] [-o benchmarks/results/]
    flock /tmp/flare-measure.lock python -m benchmarks.studies.network_limit --openvino-levers [--models default]
        [--tiles 12] [--repeats 7] [-i IMAGE] [-o benchmarks/results/]

FLOPs of one tile are counted from the network's convolutions (forward hooks on every Conv3d and
ConvTranspose3d: 2 x multiply-adds; normalisation and activations are left out, so GFLOP/s is a slight
under-estimate of the work done). The peak is the best of a large matmul and a large 3x3x3 conv3d in
torch and, for OpenVINO, that conv3d compiled by OpenVINO, each in the row's precision, measured before
the first model and after each one (the best is kept: on a shared machine the load drifts). "agree" is the
share of a random tile's voxels whose argmax equals torch fp32 batch 1 on the same tile.

Models: `default` (weights/), `small` (the SMALL preset's widths and depth on a 16x64x64 tile: a
small-patch random model), `paper` (the FLARE24 paper's architecture, 40x192x224 tile).
`--levers` adds the other levers issue 16 names (channels-last 3D, thread count, the share of sliding-
window time spent outside the network, torch.compile's start-up) for the first model.
`--openvino-levers` measures instead (and only) which OpenVINO CPU compile settings make the first model's
real tiles faster with exact f32 output (benchmarks/studies/openvino_levers.py: denormal flushing, streams with
async requests, threads, pinning, TBB partitioner, execution mode; compile time with and without a cached
blob; first-inference cost), all interleaved in one process with torch fp32 batch 1 on the same tiles, and
writes `<out>/network_levers_openvino_<cpu>.md`.
The table goes to `<out>/network_limit_<cpu>.md` with the CPU, its cores and the load beside each row.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from testsupport.model_folder import PAPER, SMALL, write_model_folder
from inference.engines.choice import cpu_has_native_bf16, openvino_installed
from inference.loading import load_model
from inference.engines.torch_engine.sliding_window import predict_logits

from benchmarks.common import (REPO, command_line, cpu_cores, cpu_name, load_average, load_text as load, metadata_markdown,
                               results_dir, run_metadata, write_text)

SMALL_TILE = (16, 64, 64)


def conv_flops(network: torch.nn.Module, tile: torch.Tensor) -> int:
    """2 x multiply-adds of every 3D (transposed) convolution for one forward pass of `tile`."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        kernel = module.weight.shape[2:].numel()
        if isinstance(module, torch.nn.ConvTranspose3d):  # every input voxel scatters a kernel
            total += 2 * inputs[0].shape[2:].numel() * module.in_channels * module.out_channels * kernel \
                // module.groups * inputs[0].shape[0]
        else:
            total += 2 * output.shape[2:].numel() * module.out_channels * module.in_channels * kernel \
                // module.groups * output.shape[0]

    handles = [m.register_forward_hook(count) for m in network.modules()
               if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    with torch.inference_mode():
        network(tile)
    for h in handles:
        h.remove()
    return total


def timed(fn, repeats: int) -> float:
    """Seconds per call: one warm-up call, then the best of `repeats` (the least disturbed by others)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)


def torch_peak(precision: str, repeats: int) -> dict[str, float]:
    """GFLOP/s of a 2048^3 matmul and a 64->64 3x3x3 conv3d on 32x96x96 in torch."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    matmul = 2 * 2048 ** 3 / timed(lambda: a @ b, repeats) / 1e9
    conv = torch.nn.Conv3d(64, 64, 3, padding=1).eval()
    x = torch.randn(1, 64, 32, 96, 96)
    flops = conv_flops(conv, x)
    with torch.inference_mode(), autocast(precision):
        conv3d = flops / timed(lambda: conv(x), repeats) / 1e9
    return {"matmul": matmul, "conv3d": conv3d}


def openvino_conv_peak(precision: str, repeats: int) -> float:
    """GFLOP/s of the same conv3d compiled by OpenVINO for the CPU in `precision`."""
    import openvino as ov
    conv = torch.nn.Conv3d(64, 64, 3, padding=1).eval()
    x = torch.randn(1, 64, 32, 96, 96)
    flops = conv_flops(conv, x)
    compiled = ov.Core().compile_model(ov.convert_model(conv, example_input=x), "CPU",
                                       {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision]})
    request = compiled.create_infer_request()
    data = x.numpy()
    return flops / timed(lambda: request.infer({0: data}), repeats) / 1e9


@dataclass
class Row:
    model: str
    tile: tuple[int, ...]
    gflop_per_tile: float
    backend: str
    precision: str
    batch: int
    ms_per_tile: float
    agree: float
    load: str

    @property
    def gflops(self) -> float:
        return self.gflop_per_tile / (self.ms_per_tile / 1000)


def model_folder(name: str, root: Path) -> Path:
    if name == "default":
        return REPO / "weights"
    arch = {"small": SMALL, "paper": PAPER}[name]
    kwargs = arch.kwargs()
    if name == "small":
        kwargs["patch_size"] = SMALL_TILE
    return write_model_folder(root / name, **kwargs)


def ensure_ir(model_dir: Path) -> None:
    from inference.engines.choice import IR_XML
    if not (model_dir / "fold_all" / IR_XML).is_file() and not any(model_dir.glob(f"fold_*/{IR_XML}")):
        from inference.weights import write_ir
        write_ir(model_dir)


def measure_model(name: str, model_dir: Path, backends, precisions, batches, repeats) -> list[Row]:
    reference = load_model(model_dir, device="cpu", backend="torch")
    tile_shape = reference.config.patch_size
    torch.manual_seed(0)
    tiles = torch.randn(max(batches), reference.num_channels, *tile_shape)
    flops = conv_flops(reference.networks[0], tiles[:1]) / 1e9
    with torch.inference_mode():
        truth = reference.networks[0](tiles[:1]).argmax(1)
    rows = []
    for backend in backends:
        if backend == "openvino":
            ensure_ir(model_dir)
        for precision in precisions:
            for batch in batches:
                model = load_model(model_dir, device="cpu", backend=backend, precision=precision, batch_size=batch)
                network = model.networks[0]
                batch_tiles = tiles[:batch].contiguous()

                def run():
                    with torch.inference_mode(), autocast(precision if backend == "torch" else "fp32"):
                        return network(batch_tiles)
                seconds = timed(run, repeats)
                agree = float((run()[:1].float().argmax(1) == truth).float().mean())
                rows.append(Row(name, tile_shape, flops, backend, precision, batch, 1000 * seconds / batch, agree,
                                load()))
                print(f"{name} {backend} {precision} batch {batch}: {rows[-1].ms_per_tile:.1f} ms/tile, "
                      f"{rows[-1].gflops:.1f} GFLOP/s, agree {agree:.4f} (load {rows[-1].load})", flush=True)
    return rows


def measure_levers(model_dir: Path, repeats: int) -> list[str]:
    """Channels-last 3D, thread count, sliding-window overhead outside the network, torch.compile start-up."""
    lines = []
    model = load_model(model_dir, device="cpu", backend="torch")
    network = model.networks[0]
    tile = torch.randn(1, model.num_channels, *model.config.patch_size)
    with torch.inference_mode():
        base = timed(lambda: network(tile), repeats)
        lines.append(f"torch fp32 batch 1, contiguous: {1000 * base:.1f} ms/tile (load {load()})")
        cl_net = network.to(memory_format=torch.channels_last_3d)
        cl_tile = tile.to(memory_format=torch.channels_last_3d)
        channels_last = timed(lambda: cl_net(cl_tile), repeats)
        network.to(memory_format=torch.contiguous_format)
        lines.append(f"torch fp32 batch 1, channels-last 3D: {1000 * channels_last:.1f} ms/tile (load {load()})")
        threads = torch.get_num_threads()
        for n in sorted({1, threads}):
            torch.set_num_threads(n)
            lines.append(f"torch fp32 batch 1, {n} thread(s): {1000 * timed(lambda: network(tile), repeats):.1f} "
                         f"ms/tile (load {load()})")
        torch.set_num_threads(threads)
    for backend in ("torch", "openvino") if openvino_installed() else ("torch",):
        m = load_model(model_dir, device="cpu", backend=backend)
        data = torch.randn(m.num_channels, *(2 * p for p in m.config.patch_size))
        calls = []

        def counted(net):
            def run(x):
                start = time.perf_counter()
                out = net(x)
                calls.append(time.perf_counter() - start)
                return out
            return run
        nets = [counted(n) for n in m.networks]
        start = time.perf_counter()
        predict_logits(data, nets, m.num_classes, m.config.patch_size, batch_size=m.plan.batch_size)
        total = time.perf_counter() - start
        outside = total - sum(calls)
        lines.append(f"sliding window ({backend}, image 2x the tile per axis, {len(calls)} calls): {total:.2f} s, "
                     f"of which outside the network {outside:.2f} s ({100 * outside / total:.1f} %) (load {load()})")
    try:
        start = time.perf_counter()
        compiled = torch.compile(network)
        with torch.inference_mode():
            compiled(tile)
            first = time.perf_counter() - start
            after = timed(lambda: compiled(tile), repeats)
        lines.append(f"torch.compile: first call {first:.1f} s (compile), then {1000 * after:.1f} ms/tile vs "
                     f"{1000 * base:.1f} eager (load {load()})")
    except Exception as e:  # noqa: BLE001 - the inductor backend needs a C compiler; say why it is absent
        lines.append(f"torch.compile: failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    return lines


def write_table(out_dir: Path, rows: list[Row], peaks: dict[str, dict[str, float]], levers: list[str],
                meta: dict) -> Path:
    cores, cpu = cpu_cores(), cpu_name()
    path = out_dir / "network_limit.md"
    lines = [f"# Network stage at the machine's limit ({cpu}, {cores} cores, no GPU)", "",
             metadata_markdown(meta), "Best of the repeats after one warm-up; load average (1/5/15 min) beside "
             "each row (the machine is shared). GFLOP counts only convolutions.", "",
             "## Peak of this machine", "", "| precision | torch matmul 2048^3 GFLOP/s | torch conv3d GFLOP/s | "
             "OpenVINO conv3d GFLOP/s |", "|---|---:|---:|---:|"]
    for precision, p in peaks.items():
        lines.append(f"| {precision} | {p['matmul']:.1f} | {p['conv3d']:.1f} | {p.get('openvino_conv3d', float('nan')):.1f} |")
    lines += ["", "## Networks", "", "| model | tile | GFLOP/tile | backend | precision | batch | ms/tile | GFLOP/s | "
              "% of peak | agree | load |", "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        peak = max(peaks[r.precision].values())
        lines.append(f"| {r.model} | {'x'.join(map(str, r.tile))} | {r.gflop_per_tile:.2f} | {r.backend} | "
                     f"{r.precision} | {r.batch} | {r.ms_per_tile:.1f} | {r.gflops:.1f} | {100 * r.gflops / peak:.0f} | "
                     f"{r.agree:.4f} | {r.load} |")
    if levers:
        lines += ["", "## Other levers (first model)", ""] + [f"- {line}" for line in levers]
    return write_text(path, "\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.network_limit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=("default", "small", "paper"), default=["default", "small", "paper"])
    parser.add_argument("--backends", nargs="+", choices=("torch", "openvino"), default=None,
                        help="default: torch, and openvino when installed")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=None,
                        help="default: fp32, and bf16 where the CPU has it natively")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--levers", action="store_true", help="also measure the other levers (first model)")
    parser.add_argument("--openvino-levers", action="store_true",
                        help="measure only the OpenVINO CPU settings (first model, real tiles of -i/--input, "
                             "interleaved with torch fp32 batch 1; --repeats rounds) and write "
                             "benchmarks/results/openvino_levers/<machine>/openvino_levers.md")
    parser.add_argument("--tiles", type=int, default=12, help="tiles per timed run for --openvino-levers")
    parser.add_argument("-i", "--input", type=Path, default=REPO / "samples" / "inputs" / "phantom_0003_0000.nii.gz",
                        help="image file whose preprocessed tiles --openvino-levers runs (a real case: "
                             "denormals only show with real activations; default samples/inputs/phantom_0003, 18 tiles)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="results folder (default benchmarks/results/network_limit/<machine>, or "
                             "openvino_levers/<machine> with --openvino-levers)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "flock /tmp/flare-measure.lock " + command_line("benchmarks.studies.network_limit", argv)
    load_before = load_average()
    if args.openvino_levers:
        args.output = args.output or results_dir("openvino_levers")
        return openvino_levers(args, command, load_before)
    args.output = args.output or results_dir("network_limit")
    backends = args.backends or (["torch", "openvino"] if openvino_installed() else ["torch"])
    precisions = args.precisions or (["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"])
    print(f"{cpu_name()}, {cpu_cores()} cores, torch threads {torch.get_num_threads()}, "
          f"load {load()}", flush=True)
    peaks: dict[str, dict[str, float]] = {}
    measure_peaks(peaks, precisions, backends, args.repeats)
    rows, levers = [], []
    with tempfile.TemporaryDirectory(prefix="network-limit-") as tmp:
        for i, name in enumerate(args.models):
            folder = model_folder(name, Path(tmp))
            batches = [b for b in args.batches if name != "paper" or b == 1]  # a paper tile is seconds already
            rows += measure_model(name, folder, backends, precisions, batches, args.repeats)
            if args.levers and i == 0:
                levers = measure_levers(folder, args.repeats)
                for line in levers:
                    print(line, flush=True)
            # peaks again after each model (best of all: a shared machine's load drifts), and the table
            # rewritten, so that a long run interrupted later keeps what it measured
            measure_peaks(peaks, precisions, backends, args.repeats)
            meta = run_metadata(command, load_before=load_before)
            print(f"wrote {write_table(args.output, rows, peaks, levers, meta)}", flush=True)
    return 0


def openvino_levers(args, command: str, load_before) -> int:
    """--openvino-levers: the OpenVINO settings study of benchmarks/studies/openvino_levers.py, as a table."""
    import openvino as ov
    from benchmarks.studies import openvino_levers as study
    from inference.engines.choice import IR_XML
    if not openvino_installed():
        print("--openvino-levers needs the openvino package", file=sys.stderr)
        return 2
    if not args.input.is_file():
        print(f"{args.input}: input image not found", file=sys.stderr)
        return 2
    cores = cpu_cores()
    header = (f"{cpu_name()}, {cores} cores, OpenVINO {ov.get_version()}, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), load {load()}")
    print(header, flush=True)
    with tempfile.TemporaryDirectory(prefix="network-levers-") as tmp:
        folder = model_folder(args.models[0], Path(tmp))
        ensure_ir(folder)
        xml = next(iter(sorted(folder.glob(f"fold_*/{IR_XML}"))))
        table, _ = study.measure(folder, xml, args.input, args.tiles, args.repeats, max(3, args.repeats // 2),
                                 log=lambda line: print(line, flush=True))
    lines = [f"# OpenVINO CPU settings for the {args.models[0]} model's tiles ({cpu_name()}, {cores} cores, no GPU)",
             "", metadata_markdown(run_metadata(command, load_before=load_before)), f"{header}.", "",
             f"{args.tiles} real tiles of {args.input.name} (preprocessed by the torch path), batch 1; every "
             f"variant compiled once from {xml.relative_to(folder)} in f32, then all timed interleaved in "
             f"{args.repeats} rounds: each round walks the tiles in slots of {cores} (what the throughput variants keep in "
             f"flight) and each slot runs every variant in turn, so load changes hit all alike. ms/tile = a round's "
             f"wall time over its slots / {args.tiles}; median and min over rounds; 'CPU ms/tile' is the process's "
             f"CPU time (all threads), which other processes' load barely changes. Agreement and logit difference are against torch fp32 on the same tiles; 'bitwise = "
             f"current' compares with today's config (inference/networks/openvino_network.py: "
             f"{study.CURRENT}). Load average 1/5/15 min beside each row (shared machine).", ""] + table
    path = write_text(args.output / "openvino_levers.md", "\n".join(lines) + "\n")
    print(f"wrote {path}", flush=True)
    return 0


def measure_peaks(peaks: dict, precisions, backends, repeats: int) -> None:
    """Update `peaks` with this moment's measurement, keeping the best per precision and kernel."""
    for precision in precisions:
        now = torch_peak(precision, repeats)
        if "openvino" in backends:
            now["openvino_conv3d"] = openvino_conv_peak(precision, repeats)
        best = peaks.setdefault(precision, {})
        for kernel, value in now.items():
            best[kernel] = max(best.get(kernel, 0.0), value)
        print(f"peak {precision} now: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in now.items())
              + f" (load {load()})", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
