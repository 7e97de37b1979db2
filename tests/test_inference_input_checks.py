"""Input checks before any voxel is read: the file recognised by its content, the header checked against
the file, the resampled grid and the peak memory costed (inference/files/nifti.py, inference/memory/cost.py).

Every folder test runs the predictor on a folder holding a good case beside the bad one: the bad one
fails with a message naming its file and the problem, the good one is still written, nothing is killed.
"""
from __future__ import annotations

import gzip
import os
import resource
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from testsupport.model_folder import PAPER, write_preset
from inference import InferenceError
from inference.files import nifti
from inference.memory import cost
from testsupport.predictor_cli import outputs, run
from inference.files.cases import Case
from inference.files.reading import read_case
from testsupport.nnunet_reference import blob_volume, write_image

REPO = Path(__file__).resolve().parent.parent
GOOD_SHAPE, GOOD_SPACING = (12, 40, 40), (1.5, 1.5, 3.0)   # (z, y, x) array, (x, y, z) spacing


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_preset(tmp_path_factory.mktemp("model") / "m", "tiny")


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    write_image(folder / "good_0000.nii.gz", blob_volume(GOOD_SHAPE), GOOD_SPACING)
    return folder


def plain_nifti_bytes(array: np.ndarray, spacing=GOOD_SPACING) -> bytes:
    """An uncompressed single-file NIfTI-1 as SimpleITK writes it."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return _written_bytes(image, "x.nii")


def _written_bytes(image: sitk.Image, name: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        sitk.WriteImage(image, str(Path(folder) / name))
        return (Path(folder) / name).read_bytes()


def nifti1_header(dims_xyz, datatype=4, bitpix=16, spacing=(1.0, 1.0, 1.0)) -> bytes:
    """A 352-byte little-endian NIfTI-1 header (and empty extension flag) with the given fields."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, len(dims_xyz), *dims_xyz, *([1] * (7 - len(dims_xyz))))
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, 1.0, *spacing, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<h", header, 254, 0)
    header[344:348] = b"n+1\0"
    return bytes(header)


# --- 1. the file recognised by its content ---------------------------------------------------------

def test_plain_nifti_named_nii_gz_is_read_like_its_gzip_twin(tmp_path, model_dir, inputs, capsys):
    (inputs / "plain_0000.nii.gz").write_bytes(plain_nifti_bytes(blob_volume(GOOD_SHAPE)))
    code, out, err = run(["-i", inputs, "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 0, err
    assert "plain: ok" in out and "good: ok" in out
    assert not (inputs / "plain_0000.nii.gz").read_bytes().startswith(nifti.GZIP_MAGIC)
    plain, good = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{c}.nii.gz")))
                   for c in ("plain", "good"))
    assert np.array_equal(plain, good)


def test_gzip_named_nii_is_read(tmp_path):
    volume = blob_volume(GOOD_SHAPE)
    path = tmp_path / "scan_0000.nii"
    path.write_bytes(gzip.compress(plain_nifti_bytes(volume)))
    read = read_case(Case("scan", [path]))
    assert np.array_equal(read.data[0], volume)
    assert read.spacing == (3.0, 1.5, 1.5)
    assert not list(Path(tempfile.gettempdir()).glob("flare-read-*"))  # the content-named link is gone


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("kind", ["nifti2", "big-endian nifti1"])
def test_nifti2_and_big_endian_headers(tmp_path, kind, compressed):
    """Both are recognised and their headers checked; SimpleITK reads the big-endian NIfTI-1, and
    NIfTI-2 (which it cannot read) is refused by name rather than as an unknown format."""
    volume = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)     # (z, y, x)
    data = volume.transpose(2, 1, 0)                                  # nibabel: (x, y, z)
    if kind == "nifti2":
        image = nibabel.Nifti2Image(data, np.diag([0.5, 0.7, 2.0, 1.0]))
    else:
        image = nibabel.Nifti1Image(data.astype(">i2"), np.diag([0.5, 0.7, 2.0, 1.0]))
    raw = image.to_bytes()
    path = tmp_path / "scan_0000.nii.gz"
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    header = nifti.inspect(path)
    assert (header.version, header.shape, header.bitpix, header.compressed) == \
        (2 if kind == "nifti2" else 1, (6, 5, 4), 16, compressed)
    assert nifti.check_size_quick(header) is True
    if kind == "nifti2":
        with pytest.raises(InferenceError, match=r"scan_0000.nii.gz: a NIfTI-2 image; SimpleITK, which reads "
                                                 r"the images here, reads NIfTI-1 only: save it as NIfTI-1"):
            read_case(Case("scan", [path]))
        return
    read = read_case(Case("scan", [path]))
    assert np.array_equal(read.data[0], volume)
    assert np.allclose(read.spacing, (2.0, 0.7, 0.5))


@pytest.mark.parametrize("content", ["text", "gzipped text", "png", "empty"])
def test_neither_gzip_nor_nifti_is_not_a_nifti_image(tmp_path, model_dir, inputs, capsys, content):
    bad = inputs / "bad_0000.nii.gz"
    payload = {"text": b"patient notes, not an image\n" * 40,
               "gzipped text": gzip.compress(b"patient notes, not an image\n" * 40),
               "png": b"\x89PNG\r\n\x1a\n" + bytes(600), "empty": b""}[content]
    bad.write_bytes(payload)
    code, out, err = run(["-i", inputs, "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 1
    kind = "gzip stream does not hold" if content == "gzipped text" else "file is neither gzip nor"
    assert f"bad: FAILED: {bad}: not a NIfTI image (the {kind} a single-file NIfTI-1/2 header)" in err
    assert "good: ok" in out and outputs(tmp_path / "out") == ["good.nii.gz"]


@pytest.mark.parametrize("cut", ["inside the header", "inside the data"])
def test_truncated_gzip_is_caught(tmp_path, model_dir, inputs, capsys, cut):
    full = gzip.compress(plain_nifti_bytes(blob_volume(GOOD_SHAPE)))
    bad = inputs / "cut_0000.nii.gz"
    bad.write_bytes(full[:30] if cut == "inside the header" else full[: len(full) // 2])
    code, out, err = run(["-i", inputs, "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 1
    expected = 352 + 12 * 40 * 40 * 4
    if cut == "inside the header":
        assert f"cut: FAILED: {bad}: truncated or corrupt gzip stream" in err
    else:
        assert f"cut: FAILED: {bad}: header says {expected} bytes, file holds " in err
        assert "(then the gzip stream breaks off: truncated or corrupt)" in err
    assert "good: ok" in out and outputs(tmp_path / "out") == ["good.nii.gz"]


# --- 2a. the header checked against the file --------------------------------------------------------

def test_hostile_gzip_header_is_refused_without_allocating(tmp_path, model_dir, inputs):
    """The 66-byte .nii.gz claiming 2000^3 int16 (16 GB): refused in a child process whose address
    space is capped at 8 GiB, so any attempt to allocate for it would fail there, not pass unseen."""
    bad = inputs / "hostile_0000.nii.gz"
    bad.write_bytes(gzip.compress(nifti1_header((2000, 2000, 2000)), mtime=0))
    assert os.path.getsize(bad) < 100

    def cap_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (8 * 1024 ** 3, 8 * 1024 ** 3))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "inference", "-i", str(inputs), "-o", str(tmp_path / "out"),
                           "-m", str(model_dir), "--device", "cpu"], capture_output=True, text=True,
                          env=env, cwd=REPO, preexec_fn=cap_address_space, timeout=300)
    assert done.returncode == 1, done.stderr
    assert (f"hostile: FAILED: {bad}: header says {352 + 2000 ** 3 * 2} bytes, file holds 352 "
            f"(image size (2000, 2000, 2000), 16 bits per voxel)") in done.stderr
    assert "good: ok" in done.stdout and outputs(tmp_path / "out") == ["good.nii.gz"]


def test_plain_file_shorter_than_its_header_says(tmp_path, model_dir, inputs, capsys):
    raw = plain_nifti_bytes(blob_volume(GOOD_SHAPE))
    bad = inputs / "short_0000.nii.gz"
    bad.write_bytes(raw[:-1000])
    code, out, err = run(["-i", inputs, "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 1
    assert (f"short: FAILED: {bad}: header says {len(raw)} bytes, file holds {len(raw) - 1000} "
            f"(image size (40, 40, 12), 32 bits per voxel)") in err
    assert "good: ok" in out and outputs(tmp_path / "out") == ["good.nii.gz"]


def test_datatype_decides_the_size_when_bitpix_disagrees(tmp_path):
    """float32 (datatype 16) with bitpix 8: readers size the data by the datatype, and so do we."""
    path = tmp_path / "liar_0000.nii.gz"
    path.write_bytes(gzip.compress(nifti1_header((10, 10, 10), datatype=16, bitpix=8) + bytes(1000)))
    header = nifti.inspect(path)
    assert header.bitpix == 32
    assert nifti.check_size_quick(header) is False    # ISIZE differs: the stream must be counted
    with pytest.raises(InferenceError, match=r"header says 4352 bytes, file holds 1352 \(image size \(10, 10, 10\), "
                                             r"32 bits per voxel\)"):
        nifti.check_size_by_decompressing(header)


def test_gzip_with_extra_bytes_or_two_members_is_read(tmp_path):
    """ISIZE differs from the header's size here, so the stream is decompressed (bounded) to decide."""
    volume = blob_volume((6, 10, 10))
    raw = plain_nifti_bytes(volume)
    extra, members = tmp_path / "extra_0000.nii.gz", tmp_path / "members_0000.nii.gz"
    extra.write_bytes(gzip.compress(raw + b"\0" * 100))
    members.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
    for path in (extra, members):
        header = nifti.inspect(path)
        assert nifti.check_size_quick(header) is False
        nifti.check_size_by_decompressing(header)  # does not raise
        assert np.array_equal(read_case(Case("c", [path])).data[0], volume)


def test_isize_matching_only_mod_2_32_does_not_pass(tmp_path):
    """A header claiming 2**32 bytes more than the stream holds has the same ISIZE mod 2**32; the sizes
    rule nothing out (random data barely compresses), so the stream is decompressed and found short."""
    claimed = (2048, 1024, 1025)                # 2**31 + 2**21 voxels: 2**32 bytes more
    # The stream holds 128^3 = 2**21 int16 voxels: 4 MiB of random data.
    data = np.random.default_rng(0).integers(-2 ** 15, 2 ** 15, 2 ** 21, dtype=np.int16).tobytes()
    path = tmp_path / "wrap_0000.nii.gz"
    path.write_bytes(gzip.compress(nifti1_header(claimed) + data, compresslevel=1))
    header = nifti.inspect(path)
    held = 352 + 2 * 128 ** 3
    assert header.expected_bytes == held + 2 ** 32
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        assert struct.unpack("<I", f.read(4))[0] == header.expected_bytes % 2 ** 32
    assert nifti.check_size_quick(header) is False
    with pytest.raises(InferenceError, match=f"header says {held + 2 ** 32} bytes, file holds {held} \\("):
        nifti.check_size_by_decompressing(header)


# --- 2b. the case costed: the arithmetic -------------------------------------------------------------

TINY = cost.ModelShape(target_spacing=(3.0, 1.5, 1.5), transpose_forward=(0, 1, 2), network_channels=1,
                       num_classes=14, patch_size=(16, 32, 32), features_per_stage=(4, 8, 16),
                       strides=((1, 1, 1), (1, 2, 2), (2, 2, 2)))


def test_estimate_arithmetic_on_the_cpu():
    # V = 20*40*40 = 32000; R = 40*20*20 = 16000 (z halved in spacing, y and x doubled); P: z 40, y and x
    # padded to the patch's 32 -> 40960; T = 16384.
    e = cost.estimate((20, 40, 40), (6.0, 0.75, 0.75), files=1, bytes_per_voxel=2, model=TINY)
    assert e.resampled_shape == (40, 20, 20)
    tile = 16384 * 4 * (1 + 2 * 14 + 4 * 4 + (4 / 1 + 8 / 4 + 16 / 32))
    assert cost.tile_bytes(TINY) == tile == 3_375_104
    held = 32000 * 4
    assert e.host == {
        "read": 32000 * (2 * 2 + 4) + held,                                               # 384,000
        "preprocess": held + 32000 * 4 + 2 * 16000 * 4,                                   # 384,000
        "network": held + 16000 * 4 + 40960 * 4 + 15 * 40960 * 4 + tile,                  # 6,188,544
        "export": held + 14 * 40960 * 4 + 14 * 32000 * 8 + 32000 * 23 + 32000 + 32000,    # 6,805,760
    }
    assert e.host_peak == 6_805_760 and e.device == {} and e.device_peak == 0


def test_estimate_of_the_numpy_engines_slab_export():
    """The numpy engine (the default on the CPU) exports slabs of planes, not class chunks: its export
    term is the logits, 16 slabs and the label map twice; the other stages are the torch engine's."""
    from dataclasses import replace
    from inference.engines.numpy_engine.resample import EXPORT_SLAB_BYTES
    assert cost.EXPORT_SLAB_BYTES == EXPORT_SLAB_BYTES               # the memory model's copy is the engine's
    torch_engine = cost.estimate((20, 40, 40), (6.0, 0.75, 0.75), files=1, bytes_per_voxel=2, model=TINY)
    numpy_engine = cost.estimate((20, 40, 40), (6.0, 0.75, 0.75), files=1, bytes_per_voxel=2,
                                 model=replace(TINY, slab_export=True))
    held = 32000 * 4
    # + V: the label map handed to the writer, as on the torch engine
    assert numpy_engine.host["export"] == held + 14 * 40960 * 4 + 16 * EXPORT_SLAB_BYTES + 2 * 32000 + 32000
    assert {k: v for k, v in numpy_engine.host.items() if k != "export"} == \
        {k: v for k, v in torch_engine.host.items() if k != "export"}


def test_numpy_engine_case_over_the_memory_limit_is_refused(tmp_path, model_dir, inputs, capsys, monkeypatch):
    """The memory refusal on the numpy engine (OpenVINO IR), with the slab export in its estimate."""
    from inference.weights import import_model
    with_ir = import_model(model_dir, tmp_path / "with_ir", ir=True)
    gib, mib = 1024 ** 3, 1024 ** 2
    fake = _fake_system(tmp_path / "sys", 20 * 1024 ** 2, "0::/\n", {
        "sys/fs/cgroup/memory.max": f"{gib}\n", "sys/fs/cgroup/memory.current": f"{100 * mib}\n"})
    monkeypatch.setattr(cost, "SYSTEM_ROOT", fake)
    big = inputs / "big_0000.nii.gz"
    write_image(big, np.zeros((100, 300, 300), np.int16), GOOD_SPACING)   # 14 fp32 logits: 0.47 GiB
    code, out, err = run(["-i", inputs, "-o", tmp_path / "out", "-m", with_ir], capsys)
    assert code == 1 and "(openvino " in out
    estimate = cost.estimate((100, 300, 300), (3.0, 1.5, 1.5), 1, 2, replace_slab(TINY))
    assert f"big: FAILED: {big}: estimated peak host memory {estimate.host_peak / gib:.2f} GiB (stage " in err
    assert "good: ok" in out and outputs(tmp_path / "out") == ["good.nii.gz"]


def replace_slab(shape):
    from dataclasses import replace
    return replace(shape, slab_export=True)


def test_estimate_on_cuda_splits_host_and_device_and_halves_logits():
    e = cost.estimate((20, 40, 40), (6.0, 0.75, 0.75), files=1, bytes_per_voxel=2, model=TINY, on_cuda=True)
    held = 32000 * 4
    assert e.host == {"read": 32000 * 8 + held, "export": held + 2 * 32000}
    assert e.device == {"preprocess": held + 32000 * 4 + 2 * 16000 * 4,
                        "network": 16000 * 4 + 40960 * 4 + 15 * 40960 * 2 + 3_375_104,
                        "export": 14 * 40960 * 2 + 14 * 32000 * 8 + 32000 * 24}


def test_estimate_chunks_classes_as_export_does_and_counts_mind():
    # 1024x1024x82 at 0.39x0.39x3 mm (FLARE's largest validation size) with the paper's spacing.
    paper = cost.ModelShape(target_spacing=PAPER.spacing, transpose_forward=(0, 1, 2), network_channels=12,
                            num_classes=14, patch_size=PAPER.patch_size, features_per_stage=PAPER.features,
                            strides=PAPER.strides, mind=True)
    shape = (82, 1024, 1024)
    e = cost.estimate(shape, (3.0, 0.39, 0.39), files=1, bytes_per_voxel=2, model=paper)
    v = 82 * 1024 * 1024
    assert e.resampled_shape == (98, 512, 512)
    chunk = (2 * 1024 ** 3) // (v * 8)                    # 14 classes at once would be 9.6 GB
    assert chunk == 3
    p = 98 * 512 * 512
    assert e.host["export"] == v * 4 + 14 * p * 4 + chunk * v * 8 + v * 23 + 2 * v
    assert e.host["preprocess"] == v * 4 + 12 * v * 4 + 2 * 12 * p * 4 + 12 * v * 4 + 1024 ** 3


def test_resampled_shape_follows_transpose_forward():
    model = cost.ModelShape(target_spacing=(1.0, 2.0, 4.0), transpose_forward=(2, 0, 1), network_channels=1,
                            num_classes=2, patch_size=(8, 8, 8), features_per_stage=(4,), strides=((1, 1, 1),))
    # Transposed axes (x, z, y) get targets 1, 2, 4: x 30*1/1, z 10*4/2, y 20*2/4.
    assert cost.resampled_shape((10, 20, 30), (4.0, 2.0, 1.0), model) == (20, 10, 30)


def _fake_system(root: Path, meminfo_kb: int, cgroup_lines: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/meminfo").write_text(f"MemTotal: 99999999 kB\nMemAvailable: {meminfo_kb} kB\n")
    (root / "proc/self/cgroup").write_text(cgroup_lines)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_host_limit_cgroup_v2_tightest_ancestor_less_page_cache(tmp_path):
    gib, mib = 1024 ** 3, 1024 ** 2
    root = _fake_system(tmp_path, 20 * 1024 ** 2, "0::/box/job\n", {
        "sys/fs/cgroup/box/memory.max": f"{8 * gib}\n",
        "sys/fs/cgroup/box/memory.current": f"{3 * gib}\n",
        "sys/fs/cgroup/box/memory.stat": f"anon 1\ninactive_file {1 * gib}\n",
        "sys/fs/cgroup/box/job/memory.max": "max\n",
        "sys/fs/cgroup/box/job/memory.current": f"{100 * mib}\n",
    })
    limit = cost.host_limit(root)
    headroom = 8 * gib - (3 * gib - 1 * gib)     # 6 GiB: the parent's limit binds, page cache reclaimable
    assert limit.bytes == headroom - int(headroom * 0.10)
    assert limit.source == "cgroup v2 limit 8.00 GiB with 2.00 GiB in use, less a 0.60 GiB margin"


def test_host_limit_cgroup_v1_and_machine_memory(tmp_path):
    gib = 1024 ** 3
    v1 = _fake_system(tmp_path / "v1", 20 * 1024 ** 2, "4:memory:/docker/abc\n0::/\n", {
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",  # the host: unlimited
        "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": f"{2 * gib}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": f"{gib}\n",
        "sys/fs/cgroup/memory/docker/abc/memory.stat": "total_inactive_file 0\n",
    })
    assert cost.host_limit(v1) == cost.Limit(gib - 512 * 1024 ** 2,
                                              "cgroup v1 limit 2.00 GiB with 1.00 GiB in use, less a 0.50 GiB margin")
    bare = _fake_system(tmp_path / "bare", 10 * 1024 ** 2, "0::/\n", {})   # no limit files: the machine's
    assert cost.host_limit(bare) == cost.Limit(10 * gib - gib, "10.00 GiB available on the machine, "
                                                               "less a 1.00 GiB margin")


# --- 2b. the case costed: refused before reading, the good case still written ------------------------

def test_case_over_the_memory_limit_is_refused_with_estimate_and_limit(tmp_path, model_dir, inputs, capsys,
                                                                       monkeypatch):
    gib, mib = 1024 ** 3, 1024 ** 2
    fake = _fake_system(tmp_path / "sys", 20 * 1024 ** 2, "0::/\n", {
        "sys/fs/cgroup/memory.max": f"{gib}\n", "sys/fs/cgroup/memory.current": f"{100 * mib}\n"})
    monkeypatch.setattr(cost, "SYSTEM_ROOT", fake)
    big = inputs / "big_0000.nii.gz"
    write_image(big, np.zeros((100, 200, 200), np.int16), GOOD_SPACING)
    code, out, err = run(["-i", inputs, "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 1
    limit = cost.host_limit()
    estimate = cost.estimate((100, 200, 200), (3.0, 1.5, 1.5), 1, 2, TINY)
    assert limit.bytes == 924 * mib - 512 * mib
    assert (f"big: FAILED: {big}: estimated peak host memory {estimate.host_peak / gib:.2f} GiB (stage export; "
            f"size 200x200x100 resampled to 200x200x100) exceeds the 0.40 GiB this process may use "
            f"(cgroup v2 limit 1.00 GiB with 0.10 GiB in use, less a 0.50 GiB margin); refused before "
            f"reading") in err
    assert "good: ok" in out and outputs(tmp_path / "out") == ["good.nii.gz"]


# --- 2c. grids that are empty or absurd ---------------------------------------------------------------

@pytest.mark.parametrize("shape, spacing, message", [
    ((1, 1, 1), (1.0, 1.0, 1.0),
     "size 1x1x1 at spacing 1x1x1 mm resamples to a 1x1x0 grid at the model's 1.5x1.5x3 mm: nothing to segment"),
    ((12, 40, 40), (1e-6, 1e-6, 1e-6),
     "size 40x40x12 at spacing 1e-06x1e-06x1e-06 mm resamples to a 0x0x0 grid at the model's 1.5x1.5x3 mm: "
     "nothing to segment"),
    ((20, 40, 40), (50.0, 50.0, 50.0),
     "size 40x40x20 at spacing 50x50x50 mm resamples to a 1333x1333x333 grid at the model's 1.5x1.5x3 mm "
     "(592 M voxels, 18491 times the image's own): refused, over 64 Mi voxels and over 8x upsampling "
     "(a spacing error?)"),
])
def test_empty_or_absurd_grid_named_before_reading(tmp_path, model_dir, inputs, capsys, shape, spacing, message):
    bad = inputs / "odd_0000.nii.gz"
    write_image(bad, blob_volume(shape) if min(shape) > 1 else np.ones(shape, np.float32), spacing)
    code, out, err = run(["-i", inputs, "-o", tmp_path / "out", "-m", model_dir], capsys)
    assert code == 1
    assert f"odd: FAILED: {bad}: {message}" in err
    assert "good: ok" in out and outputs(tmp_path / "out") == ["good.nii.gz"]


def test_arrays_get_the_same_grid_checks(model_dir):
    from inference.api import segment_array
    from inference.loading import load_model
    model = load_model(model_dir)
    with pytest.raises(InferenceError, match=r"^scan: size 1x1x1 at spacing 1x1x1 mm resamples to a 1x1x0 grid"):
        segment_array(np.ones((1, 1, 1, 1), np.float32), (1.0, 1.0, 1.0), model, source="scan")
    # Only one nonzero voxel: the image is fine, its nonzero region resamples to nothing.
    image = np.zeros((1, 12, 40, 40), np.float32)
    image[0, 6, 20, 20] = 1.0
    with pytest.raises(InferenceError, match=r"^scan: its nonzero region, \(1, 1, 1\) voxels at spacing "
                                             r"\(0\.5, 0\.5, 0\.5\) mm .* resamples to a \(0, 0, 0\) grid"):
        segment_array(image, (0.5, 0.5, 0.5), model, source="scan")


def test_real_scan_sizes_pass_the_grid_rule():
    paper = cost.ModelShape(target_spacing=PAPER.spacing, transpose_forward=(0, 1, 2), network_channels=1,
                            num_classes=14, patch_size=PAPER.patch_size, features_per_stage=PAPER.features,
                            strides=PAPER.strides)
    assert cost.check_grid((82, 1024, 1024), (3.0, 0.39, 0.39), paper, "largest") == (98, 512, 512)
    assert cost.check_grid((90, 768, 768), (6.0, 0.6, 0.6), paper, "big") == (216, 591, 591)  # 75 M voxels


# --- 9. an empty input folder ---------------------------------------------------------------------------

def test_empty_input_folder_is_a_clean_exit(tmp_path, model_dir):
    (tmp_path / "in").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "inference", "-i", str(tmp_path / "in"), "-o",
                           str(tmp_path / "out"), "-m", str(model_dir), "--device", "cpu"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"no <case>_0000.nii.gz files in {tmp_path / 'in'}: nothing to do" in done.stdout
    assert outputs(tmp_path / "out") == []
    from inference.api import ModelSpec, segment_folder
    assert segment_folder(tmp_path / "in", tmp_path / "out2", ModelSpec(model_dir, device="cpu")) == []
