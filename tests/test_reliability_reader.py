"""The CRC-checked one-pass reader of .nii.gz inputs and the header's geometry checks.

- A flipped byte in a gzip stream (ITK reads it silently, most voxels wrong) is refused with
  "corrupt gzip stream: CRC mismatch", by name, the other cases still run.
- Our voxels equal ITK's for every datatype numpy reads, both byte orders, odd scalings (slope 0, NaN,
  inf; intercept NaN), non-finite voxels, a trailing dimension of 1, two gzip members, appended bytes.
- The header refusals the issue found as raw exceptions are sentences naming the file.
"""
from __future__ import annotations

import gzip
import struct
from contextlib import ExitStack
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from inference import InferenceError
from inference.files import nifti, reading
from testsupport.model_folder import write_preset
from testsupport.nnunet_reference import blob_volume, write_image
from testsupport.predictor_cli import outputs, run


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_preset(tmp_path_factory.mktemp("model") / "m", "tiny")


@pytest.fixture
def inputs(tmp_path) -> Path:
    write_image(tmp_path / "in" / "good_0000.nii.gz", blob_volume((12, 40, 40)), (1.5, 1.5, 3.0))
    return tmp_path / "in"


def _plain(path: Path) -> bytearray:
    return bytearray(gzip.decompress(path.read_bytes()))


def _ours(path: Path) -> np.ndarray:
    with ExitStack() as links:
        return reading._voxels(reading._open_channel(path, links))


def _itk(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


# --- corrupt streams ------------------------------------------------------------------------------------

def test_flipped_byte_is_refused_as_a_corrupt_stream(tmp_path, model_dir, inputs, capsys):
    stream = bytearray((inputs / "good_0000.nii.gz").read_bytes())
    stream[len(stream) // 2] ^= 0x04                       # one bit inside the deflate data
    bad = inputs / "flipped_0000.nii.gz"
    bad.write_bytes(bytes(stream))
    with pytest.raises(Exception):
        gzip.decompress(bytes(stream))                     # Python's gzip refuses it too
    code, out, err = run(["-i", inputs, "-o", tmp_path / "out", "-m", model_dir, "--device", "cpu"], capsys)
    assert code == 1
    assert f"flipped: FAILED: {bad}: " in err
    assert "corrupt gzip stream" in err or "truncated or corrupt gzip stream" in err
    assert "good: ok" in out and outputs(tmp_path / "out") == ["good.nii.gz"]


@pytest.mark.parametrize("where, message", [(-8, "CRC mismatch"), (-3, "corrupt gzip stream: ")])
def test_damaged_trailer_is_a_corrupt_stream(tmp_path, where, message):
    path = write_image(tmp_path / "a_0000.nii.gz", blob_volume((6, 20, 20)))
    stream = bytearray(path.read_bytes())
    stream[where] ^= 0x01                                  # CRC-32 (-8..-5) or ISIZE (-4..-1)
    path.write_bytes(bytes(stream))
    with pytest.raises(InferenceError) as e:
        _ours(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_flip_that_itk_reads_as_garbage_is_refused(tmp_path):
    """The issue's case: a flipped bit that ITK decodes without complaint into wrong voxels (the trailer
    still promises the full size, so the size check passes); we refuse it as a corrupt stream."""
    path = write_image(tmp_path / "a_0000.nii.gz", (blob_volume((10, 48, 48)) * 10).astype(np.int16))
    clean, good = path.read_bytes(), _itk(path)
    found = {}
    for at in range(len(clean) - 9, len(clean) - 2000, -1):   # ITK's zlib notices most flips, not those near the end
        stream = bytearray(clean)
        stream[at] ^= 0x01
        path.write_bytes(bytes(stream))
        try:
            garbage = _itk(path)
        except RuntimeError:
            continue
        if np.array_equal(garbage, good):
            continue
        decoded = _inflated(bytes(stream))
        kind = "full length" if decoded is not None and len(decoded) == len(_plain_of(clean)) else "short"
        if kind in found:
            continue
        with pytest.raises(InferenceError) as e:
            _ours(path)
        found[kind] = str(e.value)
        if len(found) == 2:
            break
    assert found, "no flip that ITK reads silently"
    for message in found.values():
        assert message.startswith(f"{path}: corrupt gzip stream: "), found
    if "full length" in found:
        assert "CRC mismatch (the data is not what was compressed)" in found["full length"]


def _plain_of(stream: bytes) -> bytes:
    return gzip.decompress(stream)


def _inflated(stream: bytes) -> bytes | None:
    """What the deflate data of a one-member gzip stream decodes to, the trailer not checked."""
    import zlib
    try:
        return zlib.decompressobj(-15).decompress(stream[10:-8])
    except zlib.error:
        return None


# --- our voxels are ITK's -------------------------------------------------------------------------------

DTYPES = ["u1", "i1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"]
SCALINGS = [None, (2.0, 3.0), (0.5, 0.0), (float("nan"), 1.0), (1.0, float("nan")), (0.0, 5.0), (float("inf"), 0.0),
            (1e-20, 0.0), (1.5e-35, 2.0), (1e-15, 0.0), (1.0, 1e-20), (1.0, 1e-15)]   # |x| < double epsilon: ITK's rules


def _write(path: Path, array: np.ndarray, endian: str, scaling) -> Path:
    data = array.astype(np.dtype(array.dtype).newbyteorder(endian))
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 2.0, 3.0, 1.0]), dtype=data.dtype), path)
    if scaling is not None:                                # raw values, past nibabel's own handling
        raw = _plain(path)
        e = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
        struct.pack_into(e + "2f", raw, 112, *scaling)
        path.write_bytes(gzip.compress(bytes(raw)))
    return path


@pytest.mark.parametrize("dtype", DTYPES)
def test_voxels_equal_itks(tmp_path, dtype):
    rng = np.random.default_rng(len(dtype))
    compared = 0
    for i, (scaling, endian, extra) in enumerate((s, e, x) for s in SCALINGS for e in "<>" for x in (False, True)):
        array = (rng.random((7, 6, 5)) * 100).astype(dtype)
        if dtype[0] == "f":
            array.flat[3], array.flat[4], array.flat[5] = np.nan, np.inf, -np.inf
        path = _write(tmp_path / f"x{i}.nii.gz", array[..., None] if extra else array, endian, scaling)
        ours, itk = _ours(path), _itk(path)
        assert ours.dtype == np.float32 and ours.shape == itk.shape
        assert np.array_equal(ours, itk), (scaling, endian, extra)
        compared += 1
    assert compared == len(SCALINGS) * 4


@pytest.mark.parametrize("tail", [b"", b"\0" * 17, b"junk after the stream"])
def test_two_members_and_appended_bytes_read_like_itk(tmp_path, tail):
    path = write_image(tmp_path / "a.nii.gz", blob_volume((6, 20, 20)))
    raw = bytes(_plain(path))
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]) + tail)
    assert np.array_equal(_ours(path), _itk(path))


# --- the header's geometry: sentences, not exceptions ---------------------------------------------------

def _patched(folder: Path, name: str, patches) -> Path:
    """A good case with header fields overwritten: patches are (struct format, offset, values)."""
    path = write_image(folder / f"{name}_0000.nii.gz", blob_volume((12, 40, 40)), (1.5, 1.5, 3.0))
    raw = _plain(path)
    for fmt, offset, values in patches:
        struct.pack_into("<" + fmt, raw, offset, *values)
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


NAN, INF = float("nan"), float("inf")
SFORM_ON, QFORM_ON = ("h", 254, (1,)), ("h", 252, (1,))


@pytest.mark.parametrize("name, patches, message", [
    ("nanvox", [("f", 108, (NAN,))], "NIfTI header gives vox_offset nan, not a valid byte offset"),
    ("negpix", [("f", 80, (-1.5,))], "NIfTI header gives voxel spacing (pixdim) (-1.5, 1.5, 3); every spacing "
                                     "must be a finite number > 0"),
    ("zeropix", [("f", 88, (0.0,))], "NIfTI header gives voxel spacing (pixdim) (1.5, 1.5, 0)"),
    ("nansform", [SFORM_ON, ("f", 280, (NAN,))], "NIfTI header's sform (nan, "),
    ("flatsform", [SFORM_ON, ("12f", 280, (0.0,) * 12)], "is degenerate (its voxel axes do not span 3D space)"),
    ("infqform", [QFORM_ON, ("f", 268, (INF,))], "NIfTI header's qform (quaternion and offset)"),
])
def test_bad_geometry_is_a_sentence_naming_the_file(tmp_path, model_dir, capsys, name, patches, message):
    path = _patched(tmp_path / "in", name, patches)
    with pytest.raises(InferenceError) as e:
        nifti.inspect(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    code, out, err = run(["-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--device", "cpu"], capsys)
    assert code == 1 and f"{name}: FAILED: {path}: {str(e.value).split(': ', 1)[1]}" in err
    assert "Error:" not in err and "Traceback" not in err


def test_unexpected_exception_is_worded_without_its_type():
    assert reading.describe_failure("f.nii.gz", ValueError("cannot convert float NaN to integer")) == \
        "f.nii.gz: could not be processed: cannot convert float NaN to integer"
    assert reading.describe_failure("f.nii.gz", RuntimeError("ValueError: bad thing")) == \
        "f.nii.gz: could not be processed: bad thing"
    assert reading.describe_failure("f.nii.gz", MemoryError()) == "f.nii.gz: not enough memory to process this case"
    assert reading.describe_failure("f.nii.gz", OSError(5, "Input/output error", "x")) == \
        "f.nii.gz: could not be processed: Input/output error (x)"
