"""Fuzzed inputs through the predictor's folder loop: hundreds of mutated NIfTI-1 files (header fields,
gzip stream; testsupport/nifti_fuzz.py) beside one good case, segmented by `inference.api.segment_folder`
in a subprocess under an address-space limit.

Properties: the process survives; the good case's labels equal a clean run's; every mutated file is
segmented (a complete, readable label map of the grid ITK reads) or refused with a message naming it;
no stream that fails its gzip CRC/length check is segmented; no message carries a bare Python exception
type name; nothing but the finished label maps is left in the output folder.
A Hypothesis test drives the same mutations through the header check and the reader directly.
"""
from __future__ import annotations

import json
from functools import partial
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inference.api import ModelSpec, segment_folder
from inference.memory.cost import check_case
from testsupport.model_folder import write_preset
from testsupport.nifti_fuzz import mutate, plain_nifti
from testsupport.nnunet_reference import blob_volume

REPO = Path(__file__).resolve().parent.parent
MUTANTS = 300
SEED = 20240
SHAPE = (8, 24, 24)                    # z, y, x: small, so that hundreds run in CI time
ADDRESS_SPACE = 6 << 30                # torch maps ~2 GB of address space at import; 6 GB caps a runaway case
# "ValueError:", "zlib.error:", "IsalError:" ... a type name followed by a colon means nothing to a user.
PYTHON_TYPE = re.compile(r"\b(?:[A-Z]\w*(?:Error|Exception)|zlib\.error|error)\s*:")

_RUNNER = textwrap.dedent("""
    import json, resource, sys
    limit = int(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from inference.api import ModelSpec, segment_folder
    results = segment_folder(sys.argv[1], sys.argv[2], ModelSpec(sys.argv[3], device="cpu", backend="torch"))
    json.dump([{"case": r.case, "ok": r.ok, "error": r.error, "output": str(r.output) if r.output else None}
               for r in results], sys.stdout)
""")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_preset(tmp_path_factory.mktemp("model") / "m", "tiny")


@pytest.fixture(scope="module")
def good_bytes() -> bytes:
    volume = (blob_volume(SHAPE, seed=3) * 4).astype(np.int16)
    return plain_nifti(volume)


def _itk_size(path: Path) -> tuple[int, ...] | None:
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return reader.GetSize()
    except RuntimeError:
        return None


def test_fuzzed_folder(tmp_path, model_dir, good_bytes):
    import gzip
    inputs, out, clean_out = tmp_path / "in", tmp_path / "out", tmp_path / "clean"
    inputs.mkdir()
    (inputs / "good_0000.nii.gz").write_bytes(gzip.compress(good_bytes))
    clean = segment_folder(inputs, clean_out, ModelSpec(model_dir, device="cpu", backend="torch"))
    assert [r.ok for r in clean] == [True]
    rng = np.random.default_rng(SEED)
    mutants = {}
    for i in range(MUTANTS):
        m = mutate(rng, good_bytes, f"m{i:03d}")
        (inputs / f"{m.name}_0000.nii.gz").write_bytes(m.content)
        mutants[m.name] = m

    done = subprocess.run([sys.executable, "-c", _RUNNER, str(inputs), str(out), str(model_dir),
                           str(ADDRESS_SPACE)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]          # survived: no crash, no kill
    results = {r["case"]: r for r in json.loads(done.stdout)}
    assert set(results) == set(mutants) | {"good"}

    good = results["good"]
    assert good["ok"], good["error"]
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "good.nii.gz"))),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(clean_out / "good.nii.gz"))))

    segmented = []
    for name, m in mutants.items():
        r, source = results[name], inputs / f"{name}_0000.nii.gz"
        why = f"{name} ({'; '.join(m.mutations)})"
        if r["ok"]:
            segmented.append(name)
            assert not m.damaged_stream, f"{why}: a stream failing its CRC/length check was segmented"
            size = _itk_size(source)
            labels = sitk.ReadImage(str(out / f"{name}.nii.gz"))
            assert size is not None and labels.GetSize() == size, why
        else:
            assert r["error"].startswith(f"{source}: "), f"{why}: {r['error']}"
            assert not PYTHON_TYPE.search(r["error"]), f"{why}: {r['error']}"
    refused = len(mutants) - len(segmented)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.nii.gz" for n in ["good", *segmented])
    # the generator exercises both outcomes, and every kind of stream damage is seen
    assert len(segmented) > 20 and refused > 100, (len(segmented), refused)
    assert sum(m.damaged_stream for m in mutants.values()) > 20


# --- Hypothesis: arbitrary header field values through the header check and the reader ------------------

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# (offset, struct format) of the NIfTI-1 fields the reader and the header check use
_FIELDS = {"sizeof_hdr": (0, "i"), "dim": (40, "8h"), "datatype": (70, "h"), "bitpix": (72, "h"),
           "pixdim": (76, "8f"), "vox_offset": (108, "f"), "scl": (112, "2f"), "qform_code": (252, "h"),
           "sform_code": (254, "h"), "quatern": (256, "6f"), "srow": (280, "12f")}
# no subnormals: OpenVINO's CPU plugin, run in this process by earlier tests, sets flush-to-zero on its
# calling thread, and Hypothesis refuses to draw subnormal floats where they cannot be represented
_FLOATS = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False, width=32)
_SHORTS = st.one_of(st.integers(-3, 12), st.sampled_from([256, 512, 768, 1024, 1280, 1536, 2304, 32767, -32768]))


@st.composite
def _edits(draw):
    """One to three header fields set to arbitrary values (a whole field or one element of it)."""
    edits = []
    for name in draw(st.lists(st.sampled_from(sorted(_FIELDS)), min_size=1, max_size=3, unique=True)):
        offset, fmt = _FIELDS[name]
        count = int(fmt[:-1] or 1)
        code = fmt[-1]
        index = draw(st.integers(0, count - 1))
        value = draw(_FLOATS if code == "f" else _SHORTS if code == "h" else st.integers(-2**31, 2**31 - 1))
        edits.append((name, offset + index * struct.calcsize(code), code, value))
    return edits


@pytest.fixture(scope="module")
def loaded(model_dir):
    from inference.loading import load_model
    return load_model(model_dir, None, device="cpu", backend="torch")


# derandomize: the same examples on every CI run; FUZZ_EXAMPLES=2000 (say) for a deeper local search
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=_edits(), compress=st.booleans())
def test_any_header_is_read_or_refused_by_name(tmp_path, loaded, good_bytes, edits, compress):
    """Whatever the header fields hold, read_case returns the voxels ITK's reader gives, or raises
    InferenceError whose message starts with the file's name and names no Python exception type."""
    import gzip

    from inference import InferenceError
    from inference.files.cases import Case
    from inference.files.reading import read_case
    raw = bytearray(good_bytes)
    for _, at, code, value in edits:
        struct.pack_into("<" + code, raw, at, value)
    path = tmp_path / f"h{abs(hash(repr(edits))) % 10**8}_0000.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw), compresslevel=1) if compress else bytes(raw))
    try:
        volume = read_case(Case("h", [path]), partial(check_case, model=loaded))
    except InferenceError as e:
        event("refused")
        assert str(e).startswith(f"{path}: ") and not PYTHON_TYPE.search(str(e)), str(e)
    else:
        event("read")
        assert volume.data.dtype == np.float32 and volume.data.ndim == 4
        # the voxels are what ITK's reader gives for the same file, whatever the header says
        itk = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        assert np.array_equal(volume.data[0], itk, equal_nan=True), edits
    finally:
        path.unlink()
