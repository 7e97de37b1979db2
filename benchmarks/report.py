"""Render every measured number the docs show from the committed results files.

    python -m benchmarks.report            # rewrite the generated blocks and pages
    python -m benchmarks.report --check    # change nothing; exit 1 naming each doc that differs
    python -m benchmarks.report --regenerate [--only KEY ...]   # rerun the measurements, then render

A doc holds a generated block between `<!-- results:NAME -->` and `<!-- /results:NAME -->` (NAME one of
BLOCKS); the text between the markers is replaced by what BLOCKS[NAME] renders from the results files.
docs/results.md and benchmarks/results/README.md (the index of every results file) are generated whole.
The results files and the command that regenerates each are listed in SOURCES, in the order to run
them; `--regenerate` runs those commands in that order (on a quiet machine: the lead's one command at
the end) and then renders. A missing file renders as "not measured yet" with its command. tests/test_report.py fails when a
doc differs from what its results files give, so a number typed by hand, or left stale, fails CI.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import REPO, RESULTS, write_text
from benchmarks.studies.container_startup import CHAIN_STEPS
from benchmarks.studies.roi import set_total

LOCK = "flock /tmp/flare-measure.lock "


@dataclass(frozen=True)
class Source:
    """One results file the docs need: where it lies (a glob under the repository: one folder per
    machine), what it is, and the command that regenerates it."""
    key: str
    pattern: str
    what: str
    command: str
    regenerate: bool = True   # run by --regenerate (False: only when named with --only)


# In the order to run them, on a quiet machine (the last three take the measurement lock themselves).
SOURCES = [
    Source("ci", "benchmarks/results/commands/*/ci.json", "the test command in a fresh clone: time, last lines, .venv size",
           "rm -rf /tmp/fresh-ci && git clone -q . /tmp/fresh-ci && "
           "python3 -m benchmarks.record ci --size /tmp/fresh-ci/.venv -- bash /tmp/fresh-ci/.ci/run"),
    Source("demo", "benchmarks/results/commands/*/demo.json", "the demo in a fresh clone: time, last lines, .venv size",
           "rm -rf /tmp/fresh-demo && git clone -q . /tmp/fresh-demo && "
           "python3 -m benchmarks.record demo --size /tmp/fresh-demo/.venv -- bash /tmp/fresh-demo/docker/demo.sh"),
    Source("image_sizes_cpu", "benchmarks/results/commands/*/image_sizes_cpu.json",
           "CPU image size, ours and plain, raw and docker save | gzip",
           "python -m benchmarks.record image_sizes_cpu -- bash docker/image_sizes.sh --json cpu"),
    Source("image_sizes_cuda", "benchmarks/results/image_size/image_sizes.json",
           "the CUDA (GPU) image's size, raw and docker save | gzip (with the CPU images of that day)",
           "docker/build.sh --variant cuda, then docker image inspect and docker save | gzip (by hand: the "
           "CUDA build downloads about 3 GB)", regenerate=False),
    Source("compare_nnunet", "benchmarks/results/compare_nnunet/*/compare_nnunet.json",
           "ours vs nnU-Net's predictor: time, peak RSS, Dice",
           LOCK + "python -m benchmarks.studies.compare_nnunet --rounds 3 --no-tta-run --no-same-plans-run"),
    Source("path_agreement", "benchmarks/results/path_agreement/*/path_agreement.json",
           "default path vs torch fp32 on held-out phantoms, with ROI",
           LOCK + "python -m benchmarks.studies.path_agreement -q"),
    Source("path_agreement_no_roi", "benchmarks/results/path_agreement/*/no_roi/path_agreement.json",
           "the same without ROI", LOCK + "python -m benchmarks.studies.path_agreement --no-roi -q"),
    Source("roi", "benchmarks/results/roi/*/roi.json", "ROI-first prediction with and without the localiser",
           LOCK + "python -m benchmarks.studies.roi --cases 4 --device cpu"),
    Source("container_startup", "benchmarks/results/container_startup/*/container_startup.json",
           "the organisers' command per sample case against a warm process, with the gap's parts",
           "bash docker/build.sh && " + LOCK + "python -m benchmarks.studies.container_startup --rounds 5"),
    Source("default_model", "weights/provenance.json", "the default model's held-out and sample scores",
           "python -m training.default_model --work /tmp/flare_train --out weights/   # retrains the shipped model",
           regenerate=False),
]
SOURCE = {s.key: s for s in SOURCES}
DOCS = ("README.md", "docker/README.md", "docs/setup.md", "docs/cpu_path.md", "docs/roi.md")   # docs with blocks
RESULTS_PAGE = REPO / "docs" / "results.md"
INDEX_PAGE = RESULTS / "README.md"
BLOCK_RE = re.compile(r"(<!-- results:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


# --- reading results files ------------------------------------------------------------------------------

def find(key: str, root: Path = REPO) -> tuple[Path, dict] | None:
    """The newest results file of SOURCE[key] (by its header's date; files without one come first), or None."""
    found = []
    for path in sorted(root.glob(SOURCE[key].pattern)):
        data = json.loads(path.read_text())
        found.append((header(data)["date"] or "", path, data))
    if not found:
        return None
    _, path, data = max(found, key=lambda f: f[0])
    return path, data


def header(data: dict) -> dict:
    """{date, commit, machine, load} of a results file; older files (written before the common header)
    give what they recorded, None for the rest."""
    if not isinstance(data, dict):   # a bare list of rows (files written before the common header)
        return {"date": None, "commit": None, "machine": None, "load": None}
    meta = data.get("metadata")
    if meta:
        m = meta["machine"]
        machine = f"{m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        load = "/".join(f"{x:.2f}" for x in meta["load_before"])
        return {"date": meta["date"], "commit": meta["commit"], "machine": machine, "load": load}
    machine = data.get("machine") or data.get("device")
    if isinstance(machine, dict):
        machine = f"{machine.get('cpu') or machine.get('processor')}, {machine.get('cores') or machine.get('cpu_count')} cores"
    load = data.get("load_before") or data.get("load_average_1min")
    return {"date": data.get("date"), "commit": None, "machine": machine, "load": load}


def provenance(data: dict, path: Path) -> str:
    """'machine, date, commit' of a results file, and a link to it."""
    h = header(data)
    parts = [h["machine"] or "machine not recorded", h["date"] or "date not recorded",
             f"commit {h['commit']}" if h["commit"] else "commit not recorded"]
    shown = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    return f"{'; '.join(str(p) for p in parts)}; `{shown}`"


def missing(key: str) -> str:
    return f"not measured yet: `python -m benchmarks.report --regenerate --only {key}`"


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


# --- the numbers, one function per row ------------------------------------------------------------------

OURS_DEFAULT, OURS_WHOLE, OURS_TORCH, NNUNET = "ours, default settings", "ours, whole image", "ours, torch fp32", "nnU-Net"


def speed_row() -> list[str]:
    found = find("compare_nnunet")
    if not found:
        return ["Speed vs nnU-Net (one case, CPU)", missing("compare_nnunet"), ""]
    path, d = found
    m = {k: v["to_file_s"]["median"] for k, v in d["medians"].items()}
    text = (f"ours **{m[OURS_DEFAULT]:.2f} s** (whole image {m[OURS_WHOLE]:.2f} s) vs nnU-Net {m[NNUNET]:.2f} s: "
            f"{m[OURS_DEFAULT] / m[NNUNET]:.2f} ({m[OURS_WHOLE] / m[NNUNET]:.2f}) of its time; median of "
            f"{d['rounds']} rounds, wall time to the file written")
    return ["Speed vs nnU-Net (one case, CPU)", text, provenance(d, path)]


def memory_row() -> list[str]:
    found = find("compare_nnunet")
    if not found:
        return ["Peak memory (RSS)", missing("compare_nnunet"), ""]
    path, d = found
    m = {k: v["peak_rss_mib"]["median"] for k, v in d["medians"].items()}
    return ["Peak memory (RSS, same runs)", f"ours {m[OURS_DEFAULT]:,.0f} MiB (whole image {m[OURS_WHOLE]:,.0f}) vs "
            f"nnU-Net {m[NNUNET]:,.0f} MiB", provenance(d, path)]


def accuracy_row() -> list[str]:
    found = find("default_model")
    if not found:
        return ["Accuracy of the default model", missing("default_model"), ""]
    path, d = found
    organs = d["heldout_scores"]["per_organ"].values()
    dsc = 100 * sum(o["dsc_mean"] for o in organs) / len(organs)
    nsd = 100 * sum(o["nsd_mean"] for o in organs) / len(organs)
    samples = ", ".join(f"{100 * v:.1f}" for v in d["sample_cases_mean_dsc"].values())
    return ["Accuracy, default model (phantoms)", f"mean DSC **{dsc:.1f} %**, NSD {nsd:.1f} % over 13 organs on "
            f"{d['heldout_scores']['cases']} held-out phantoms; samples/: {samples} % mean DSC", provenance(d, path)]


def agreement_row() -> list[str]:
    found = find("path_agreement")
    if not found:
        return ["Fast path vs exact torch fp32", missing("path_agreement"), ""]
    path, d = found
    s = d["agreement"]["default"]["summary"]["min"]
    truth = d["truth_mean_dsc_percent"]
    return ["Fast path vs exact torch fp32", f"lowest per-label Dice {s['lowest']:.4f} over {len(d['cases'])} "
            f"held-out phantoms; mean DSC vs truth {truth['default']:.2f} % vs {truth['reference']:.2f} %",
            provenance(d, path)]


def image_row() -> list[str]:
    found = find("image_sizes_cpu")
    if not found or not (found[1].get("result") or {}).get("variants"):
        return ["Image size (CPU variant)", missing("image_sizes_cpu"), ""]
    path, d = found
    v = d["result"]["variants"][0]
    return ["Image size (CPU variant)", f"ours **{gb(v['ours_bytes'])}** vs plain `pip install torch nnunetv2` "
            f"{gb(v['plain_bytes'])} ({100 * v['ours_bytes'] / v['plain_bytes']:.0f} %); `docker save | gzip` "
            f"{gb(v['ours_gzip_bytes'])} vs {gb(v['plain_gzip_bytes'])}; torch {v['torch']}", provenance(d, path)]


def cuda_image_row() -> list[str]:
    found = find("image_sizes_cuda")
    if not found or "cuda" not in found[1].get("images", {}):
        return ["Image size (CUDA variant)", missing("image_sizes_cuda"), ""]
    path, d = found
    v = d["images"]["cuda"]
    return ["Image size (CUDA variant, the one to submit)", f"**{gb(v['size_bytes'])}**; `docker save | gzip` "
            f"{gb(v['save_gzip_bytes'])}", provenance(d, path)]


def table(header_cells: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header_cells) + " |", "|" + "---|" * len(header_cells)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


# --- the blocks -----------------------------------------------------------------------------------------

def summary_block() -> str:
    rows = [speed_row(), memory_row(), accuracy_row(), agreement_row(), image_row(), cuda_image_row()]
    return table(["What", "Measured", "Machine, date, source"], rows)


def run_block(key: str, title: str) -> str:
    """`title` (the command) with where it ran: a fresh clone (SOURCES' command) or a checkout whose
    .venv and Docker base image were already there (then the installs took no time)."""
    found = find(key)
    if not found:
        return f"{title} in a fresh clone: {missing(key)}.\n"
    path, d = found
    command = (d.get("metadata") or {}).get("command") or d.get("command") or ""
    where = "in a fresh clone" if "fresh-" in str(command) else \
        "in a checkout whose `.venv` and Docker base image already existed"
    state = "exit 0" if d["returncode"] == 0 else f"**exit {d['returncode']}**"
    tail = "\n".join(d["output_tail"])
    return (f"{title} {where}: **{minutes(d['seconds'])}**, {state}, on {provenance(d, path)}. Its last "
            f"lines:\n\n```text\n{tail}\n```\n")


def demo_block() -> str:
    return run_block("demo", "`bash docker/demo.sh`")


def ci_block() -> str:
    return run_block("ci", "`bash .ci/run`")


def venv_block() -> str:
    lines = []
    for key, what in (("demo", "the demo's `.venv` (CPU torch)"), ("ci", "the tests' `.venv` (torch's default build)")):
        found = find(key)
        sizes = (found[1].get("sizes_bytes") or {}) if found else {}
        size = next((v for k, v in sizes.items() if k.endswith(".venv")), None)
        lines.append(f"- {what}: " + (f"**{gb(size)}** ({provenance(found[1], found[0])})" if size
                                       else missing(key)))
    return "\n".join(lines) + "\n"


def cpu_path_block() -> str:
    """The torch-free path against the torch path, whole image, from the comparison with nnU-Net."""
    found = find("compare_nnunet")
    if not found:
        return missing("compare_nnunet") + "\n"
    path, d = found
    rows = []
    for label, title in ((OURS_WHOLE, "OpenVINO, no torch (default: `--precision auto`, bf16 on a CPU with native bfloat16)"),
                         (OURS_TORCH, "`--backend torch --precision fp32 --batch-size 1`")):
        m = d["medians"][label]
        rows.append([title, f"{m['startup_s']['median']:.2f} s", f"{m['first_tile_s']['median']:.2f} s",
                     f"{m['peak_rss_mib']['median']:,.0f} MiB", f"{m['to_file_s']['median']:.2f} s"])
    torch_dice = [v for v in d["dice"].get(OURS_TORCH, {}).values() if v is not None]
    text = table(["", "start-up (imports + model load)", "time to first tile", "peak RSS", "wall to file written"],
                 rows)
    text += (f"\nMedians of {d['rounds']} interleaved rounds; {provenance(d, path)}. Lowest per-label Dice "
             f"between the two paths on that case: {min(torch_dice):.4f}.\n" if torch_dice else "")
    found = find("path_agreement")
    if found:
        path, d = found
        voxels = d["agreement"]["default"]["voxels_differing"]
        text += (f"\nOn {len(voxels)} held-out phantoms at most {max(voxels.values())} voxels per case differ "
                 f"({provenance(d, path)}).\n")
    return text


def _roi_rows(d) -> list[dict]:
    return d["rows"] if isinstance(d, dict) else d   # files written before the common header: a bare list


def roi_block() -> str:
    """Per set of cases: time, tiles, peak RSS, mean DSC and agreement with no ROI, for each ROI mode
    (benchmarks.studies.roi: no ROI, ROI on the whole image's grid, ROI on a box grid)."""
    found = find("roi")
    if not found:
        return missing("roi") + "\n"
    path, d = found
    rows_in, rows = _roi_rows(d), []
    for name in ("large", "heldout", "samples", "compare"):
        sub = [r for r in rows_in if r["set"] == name]
        if not sub:
            continue
        n, total = len(sub), set_total(sub)
        boxes = sum(1 for r in sub if (r["decision"] or {}).get("box"))
        ran = sum(1 for r in sub if (r["decision"] or {}).get("localizer_run", True))
        for mode, label in (("plain", "no ROI"), ("roi", "ROI (default)"), ("box", "ROI, `--roi-grid box`")):
            if f"{mode}_s" not in total:
                continue
            agree = total.get(f"{mode}_agreement")
            rows.append([f"{name} ({n} case{'s' if n > 1 else ''}; boxes: {boxes} of {n}; localiser run by the "
                         f"default: {ran} of {n})" if mode == "plain" else "",
                         label, f"{total[f'{mode}_s']:.2f} s" + (f" (localize {total['localize_s']:.2f} s)"
                                                                 if mode == "roi" else ""),
                         "" if mode == "plain" else f"**{total[f'{mode}_s'] / total['plain_s']:.2f}**",
                         str(total[f"{mode}_tiles"]), f"**{100 * total[f'{mode}_dsc']:.2f}**",
                         "-" if agree is None else f"{agree['worst_dice']:.3f}", f"{total[f'{mode}_gb']:.2f} GB"])
    paper = [r["paper_tiles"] for r in rows_in if "paper_tiles" in r]
    if paper and "box" in paper[0]:
        whole, roi, box = (sum(p[k] for p in paper) for k in ("whole", "roi", "box"))
        rows.append([f"paper's architecture, the same {len(paper)} large fields (tiles only)", "no ROI / ROI / box grid",
                     "", "", f"**{whole} / {roi} / {box}**", "", "", ""])
    text = table(["", "mode", "time", "ratio to no ROI", "full-model tiles", "mean DSC",
                  "lowest label Dice vs no ROI", "peak RSS (max)"], rows)
    return text + f"\n{provenance(d, path)}.\n"


ROI_ORGANS = (("Esophagus", "oesophagus"), ("Duodenum", "duodenum"), ("IVC", "IVC"), ("RK", "right kidney"))


def roi_compare_block() -> str:
    """The compare case with and without the ROI: box, mean and per-organ DSC, time (benchmarks.studies.roi)."""
    found = find("roi")
    rows_in = _roi_rows(found[1]) if found else []
    case = next((r for r in rows_in if r["set"] == "compare" and "plain_organ_dsc" in r), None)
    if case is None:
        return missing("roi") + "\n"
    box = (case["decision"] or {}).get("box")
    box_text = ", ".join(f"{a}..{b}" for a, b in box) if box else "whole (fall-back)"
    rows = []
    for mode, label in (("plain", "whole image (`--no-roi`)"), ("roi", "ROI, full cranio-caudal extent (default)"),
                        ("box", "ROI, `--roi-grid box`")):
        if f"{mode}_dsc" not in case:
            continue
        localize = case[f"{mode}_timings"].get("localize")
        skipped = mode == "roi" and not (case["decision"] or {}).get("localizer_run", True)
        rows.append([label, "-" if mode == "plain" else "- (localiser not run: no box spares a tile)" if skipped
                     else box_text, f"**{100 * case[f'{mode}_dsc']:.1f}**",
                     *[f"{100 * case[f'{mode}_organ_dsc'][k]:.1f}" for k, _ in ROI_ORGANS],
                     f"{case[f'{mode}_s']:.2f} s" + (f" (localize {localize:.2f} s)" if localize is not None else "")])
    text = table(["", "box (Z, Y, X)", "mean DSC", *[name for _, name in ROI_ORGANS], "time"], rows)
    return text + f"\n{case['case']}; {provenance(found[1], found[0])}.\n"


def container_startup_block() -> str:
    """Medians of the organisers' command and a warm process on the samples, and the gap's parts
    (benchmarks.studies.container_startup)."""
    found = find("container_startup")
    if not found:
        return missing("container_startup") + "\n"
    path, d = found
    s = d["summary"]
    cold = ", ".join(f"{k} {v:+.2f}" for k, v in s["stages_cold_minus_warm"].items() if abs(v) >= 0.005)
    rows = [["organisers' command (`docker container run` to exit)", f"{s['docker_wall']:.2f} s"],
            ["the same case in a warm process", f"{s['in_process_wall']:.2f} s"],
            ["**gap**", f"**{s['gap']:.2f} s**"],
            ["of which: Docker (a bare container: `/bin/bash -c true`)", f"{s['bare_container']:.2f} s"],
            ["of which: interpreter start and exit (shells included)", f"{s['interpreter_start_and_exit']:.2f} s"],
            ["of which: imports", f"{s['imports']:.2f} s"],
            ["of which: model load (IR read, manifest check; compiling runs in the background)",
             f"{s['model_load']:.2f} s"],
            ["of which: the case's stages run cold, minus warm", cold or "0"],
            ["labels: voxels differing from the warm process's (max over cases and rounds)",
             str(s["voxels_differing_max"])]]
    if "chain" in s:    # files measured before the critical chain was part of the study have none
        c = s["chain"]
        rows += [["critical chain: a container that only gets the model ready for its first tile",
                  f"{c['wall']:.2f} s"],
                 ["of which: numpy import, OpenVINO import, predictor imports, model load, compile wait",
                  ", ".join(f"{c[k]:.2f}" for k in CHAIN_STEPS)],
                 ["**floor of the gap** (the chain minus the warm read and preprocess, done beside the compile)",
                  f"**{s['gap_floor']:.2f} s**"]]
    text = table(["median over rounds and sample cases", "seconds"], rows)
    return text + f"\nLoad average {s['load'][0]:.1f}-{s['load'][1]:.1f}; {provenance(d, path)}.\n"


def image_sizes_block() -> str:
    return table(["What", "Measured", "Machine, date, source"], [image_row(), cuda_image_row()])


BLOCKS: dict[str, Callable[[], str]] = {"summary": summary_block, "demo": demo_block, "ci": ci_block,
                                        "venv": venv_block, "image_sizes": image_sizes_block, "cpu_path": cpu_path_block,
                                        "roi": roi_block, "roi_compare": roi_compare_block,
                                        "container_startup": container_startup_block}


# --- the pages ------------------------------------------------------------------------------------------

def results_page() -> str:
    parts = ["# Measured results", "",
             "Generated by `python -m benchmarks.report` from the results files it names; do not edit. Every "
             "row says the machine, the date and the commit its file records (older files recorded less).", "",
             "## Summary", "", summary_block(), "## The demo and the tests", "", demo_block(), ci_block(),
             "## Virtual environments", "", venv_block(), "## Ours vs nnU-Net's predictor, every run", ""]
    found = find("compare_nnunet")
    if found:
        path, d = found
        rows = [[label, f"{v['to_file_s']['median']:.2f}", f"{v['peak_rss_mib']['median']:,.0f}",
                 f"{100 * d['mean_dice_vs_truth'][label]:.1f}" if label in d.get("mean_dice_vs_truth", {}) else "-"]
                for label, v in d["medians"].items()]
        parts += [f"Model {d['model']}; {provenance(d, path)}.", "",
                  table(["Run", "Wall to file (s, median)", "Peak RSS (MiB)", "Mean Dice vs truth (%)"], rows)]
    else:
        parts += [missing("compare_nnunet") + "\n"]
    parts += ["## Agreement of the fast path with torch fp32", ""]
    for key, title in (("path_agreement", "With ROI"), ("path_agreement_no_roi", "Without ROI")):
        found = find(key)
        if not found:
            parts += [f"{title}: {missing(key)}.", ""]
            continue
        path, d = found
        s = d["agreement"]["default"]["summary"]
        parts += [f"{title}: lowest per-label Dice {s['min']['lowest']:.4f} (pooled {s['pooled']['lowest']:.4f}), "
                  f"mean {s['min']['mean']:.4f}; mean DSC vs truth {d['truth_mean_dsc_percent']['default']:.2f} % "
                  f"(torch fp32 {d['truth_mean_dsc_percent']['reference']:.2f} %); {provenance(d, path)}.", ""]
    parts += ["## The default model on held-out phantoms", ""]
    found = find("default_model")
    if found:
        path, d = found
        rows = [[name, f"{100 * o['dsc_mean']:.1f} ± {100 * o['dsc_std']:.1f}",
                 f"{100 * o['nsd_mean']:.1f} ± {100 * o['nsd_std']:.1f}"]
                for name, o in d["heldout_scores"]["per_organ"].items()]
        parts += [f"{d['heldout_scores']['cases']} cases, {d['heldout_scores']['predictor']}; {provenance(d, path)}.",
                  "", table(["Organ", "DSC (%)", "NSD (%)"], rows)]
    parts += ["## Regenerating every number", "",
              "`python -m benchmarks.report --regenerate` runs these in this order, then renders every page; run it "
              "on a quiet machine (`--only KEY ...` reruns some; the last one retrains the shipped model and runs "
              "only when named):", ""]
    parts += [f"{i}. `{s.key}`, {s.what}: `{s.command}`" for i, s in enumerate(SOURCES, 1)]
    return "\n".join(parts).rstrip("\n") + "\n"


def index_page(root: Path = RESULTS) -> str:
    """benchmarks/results/README.md: every results file, by tool and machine, with its header."""
    lines = ["# Results files", "",
             "Generated by `python -m benchmarks.report`; do not edit. Layout: "
             "`benchmarks/results/<tool>/<machine>/[<variant>/]<file>`, the machine named by "
             "`benchmarks.common.machine_slug()`. Each file made since the common header states its command, "
             "date, commit, machine and load; older ones say less (\"-\"). What the docs need, and the command "
             "that regenerates each: [docs/results.md](../../docs/results.md#regenerating-every-number).", "",
             "| File | Command | Date | Commit | Machine | Load before |", "|---|---|---|---|---|---|"]
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".md")
                       and p != INDEX_PAGE and "tmp" not in p.relative_to(root).parts[:1]):
        rel = path.relative_to(root).as_posix()
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                data = {}
            h = header(data)
            meta = data.get("metadata") if isinstance(data, dict) else None
            command = (meta or {}).get("command")   # older files' commands name modules since moved
        else:
            text = path.read_text()
            date = re.search(r"^Date: ([^;]*); commit (\S+)", text, re.M)   # benchmarks.common.metadata_markdown
            h = {"date": date and date[1], "commit": date and date[2], "machine": None, "load": None}
            command = date and re.search(r"^Command: `([^`]*)`", text, re.M)[1]
        cell = lambda x: str(x).replace("|", "\\|") if x else "-"   # noqa: E731
        lines.append(f"| [{rel}]({rel}) | {cell(command)} | {cell(h['date'])} | {cell(h['commit'])} | "
                     f"{cell(h['machine'])} | {cell(h['load'])} |")
    return "\n".join(lines) + "\n"


# --- rendering ------------------------------------------------------------------------------------------

def render_blocks(text: str) -> str:
    """`text` with every results block re-rendered; unknown block names raise KeyError."""
    return BLOCK_RE.sub(lambda m: m[1] + BLOCKS[m["name"]]() + m[4], text)


def rendered(root: Path = REPO) -> dict[Path, str]:
    """{doc: its text as the results files give it} for every generated doc."""
    out = {}
    for name in DOCS:
        path = root / name
        if path.is_file():
            out[path] = render_blocks(path.read_text())
    out[RESULTS_PAGE] = results_page()
    out[INDEX_PAGE] = index_page()
    return out


def stale(root: Path = REPO) -> list[Path]:
    """The generated docs whose text differs from what their results files give."""
    return [p for p, text in rendered(root).items() if not p.is_file() or p.read_text() != text]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    what = p.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="write nothing; exit 1 if a doc differs from its results")
    what.add_argument("--regenerate", action="store_true",
                      help="run the commands of SOURCES in order (those marked to), then render")
    p.add_argument("--only", nargs="+", choices=[s.key for s in SOURCES], metavar="KEY",
                   help="with --regenerate: only these sources (" + ", ".join(s.key for s in SOURCES) + ")")
    return p


def regenerate(keys: Sequence[str] | None = None, run: Callable[[str], int] | None = None) -> list[str]:
    """Run the commands of SOURCES in order (all marked to regenerate, or the named ones); returns the
    keys whose command failed. Each runs with bash in the repository root, its output on the console."""
    run = run or (lambda command: subprocess.run(command, shell=True, cwd=REPO, executable="/bin/bash").returncode)
    failed = []
    for s in SOURCES:
        if (keys and s.key not in keys) or (not keys and not s.regenerate):
            continue
        print(f"report: regenerating {s.key}: {s.command}", flush=True)
        if run(s.command) != 0:
            print(f"report: {s.key} failed; its results file is left as it was", file=sys.stderr, flush=True)
            failed.append(s.key)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    failed = regenerate(a.only) if a.regenerate else []
    if a.check:
        bad = stale()
        for path in bad:
            print(f"{path.relative_to(REPO)}: differs from its results files (run python -m benchmarks.report)",
                  file=sys.stderr)
        return 1 if bad else 0
    for path, text in rendered().items():
        if not path.is_file() or path.read_text() != text:
            write_text(path, text)
            print(f"wrote {path.relative_to(REPO)}")
    if failed:
        print(f"report: these failed to regenerate: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
