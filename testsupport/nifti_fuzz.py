"""Mutated NIfTI-1 files for fuzz tests: a valid header and gzip stream with one or two fields or
stream bytes changed (dims, datatype, bitpix, pixdim, vox_offset, scaling, qform/sform, magic,
sizeof_hdr, truncation, appended bytes, multi-member gzip, flipped stream bytes).

Seeded (`mutate(rng, ...)` with a numpy Generator): a failing file is reproduced from its seed and
mutation list, which are written into each `Mutant`.
"""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

HEADER = 348
DATA = 352


@dataclass
class Mutant:
    name: str
    content: bytes
    mutations: list[str] = field(default_factory=list)
    stream_only: bool = True       # only the compressed stream was changed: the header is intact

    damaged_stream: bool = False   # the stream fails Python's gzip CRC-32/ISIZE check (flipped or cut)


def _fails_check(stream: bytes) -> bool:
    """Whether Python's gzip module (which checks every member's CRC-32 and ISIZE) refuses `stream`."""
    try:
        gzip.decompress(stream)
    except Exception:  # noqa: BLE001  zlib.error, gzip.BadGzipFile, EOFError: all mean "refused"
        return True
    return False


def plain_nifti(array_zyx: np.ndarray, spacing_xyz=(1.5, 1.5, 3.0)) -> bytes:
    """A valid single-file NIfTI-1 (uncompressed bytes) as SimpleITK writes it."""
    import tempfile
    from pathlib import Path
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing_xyz)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.nii"
        sitk.WriteImage(image, str(path))
        return path.read_bytes()


_ODD_FLOATS = (0.0, -1.5, float("nan"), float("inf"), -float("inf"), 1e-6, 1e6, 1e30, 2.0)
_DATATYPES = (0, 1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 9999, -4)


def _set(raw: bytearray, fmt: str, offset: int, *values) -> None:
    struct.pack_into("<" + fmt, raw, offset, *values)


def _header_mutation(rng: np.random.Generator, raw: bytearray) -> str:
    """Change one header field of `raw` (uncompressed NIfTI-1 bytes); return what was done."""
    kind = rng.choice(["dim0", "dim", "datatype", "bitpix", "pixdim", "vox_offset", "scaling", "qform",
                       "sform", "magic", "sizeof_hdr"])
    if kind == "dim0":
        v = int(rng.choice([-1, 0, 1, 2, 4, 5, 8, 300]))
        _set(raw, "h", 40, v)
    elif kind == "dim":
        i = int(rng.integers(1, 5))
        v = int(rng.choice([-3, 0, 1, 2, 7, 200, 32767]))
        _set(raw, "h", 40 + 2 * i, v)
        kind = f"dim[{i}]"
    elif kind == "datatype":
        v = int(rng.choice(_DATATYPES))
        _set(raw, "h", 70, v)
    elif kind == "bitpix":
        v = int(rng.choice([-16, 0, 1, 7, 8, 16, 64, 32767]))
        _set(raw, "h", 72, v)
    elif kind == "pixdim":
        i = int(rng.integers(0, 5))
        v = float(rng.choice(_ODD_FLOATS))
        _set(raw, "f", 76 + 4 * i, v)
        kind = f"pixdim[{i}]"
    elif kind == "vox_offset":
        v = float(rng.choice([float("nan"), -1.0, 0.0, 100.0, 348.0, 351.0, 356.0, 1e12, float("inf"), 3e9]))
        _set(raw, "f", 108, v)
    elif kind == "scaling":
        v = (float(rng.choice(_ODD_FLOATS)), float(rng.choice(_ODD_FLOATS)))
        _set(raw, "2f", 112, *v)
    elif kind == "qform":
        _set(raw, "h", 252, int(rng.choice([0, 1, 2, -1, 99])))
        i = int(rng.integers(0, 6))
        v = float(rng.choice(_ODD_FLOATS))
        _set(raw, "f", 256 + 4 * i, v)
        kind = f"qform code and quatern[{i}]"
    elif kind == "sform":
        _set(raw, "h", 254, int(rng.choice([0, 1, 2, 4, -1])))
        if rng.random() < 0.3:
            row = int(rng.integers(0, 3))
            _set(raw, "4f", 280 + 16 * row, 0.0, 0.0, 0.0, 0.0)
            v = f"row {row} zeroed"
        else:
            i = int(rng.integers(0, 12))
            v = float(rng.choice(_ODD_FLOATS))
            _set(raw, "f", 280 + 4 * i, v)
    elif kind == "magic":
        magics = [b"n+2\0", b"ni1\0", b"\0\0\0\0", b"n+1x"]   # (numpy's choice would strip the NULs)
        v = magics[int(rng.integers(len(magics)))]
        raw[344:348] = v
    else:
        v = int(rng.choice([0, 347, 349, 540, 0x5C010000]))
        _set(raw, "i", 0, v)
    return f"{kind}={v!r}"


def _stream_mutation(rng: np.random.Generator, stream: bytes, raw: bytes) -> tuple[bytes, str]:
    """Change the gzip stream itself; return the new stream and what was done."""
    kind = rng.choice(["truncate", "append", "members", "flip", "flip_trailer", "plain"])
    if kind == "truncate":
        cut = int(rng.integers(1, len(stream)))
        return stream[:cut], f"truncated at {cut} of {len(stream)}"
    if kind == "append":
        junk = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
        junk = junk if rng.random() < 0.5 else b"\0" * len(junk)
        return stream + junk, f"{len(junk)} bytes appended"
    if kind == "members":
        cuts = sorted(set(int(c) for c in rng.integers(1, len(raw), int(rng.integers(1, 3)))))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
        return b"".join(gzip.compress(p, mtime=0) for p in pieces), f"{len(pieces)} gzip members"
    if kind == "flip":
        at = int(rng.integers(10, len(stream) - 8))    # inside the deflate data
        bit = 1 << int(rng.integers(0, 8))
        out = bytearray(stream)
        out[at] ^= bit
        return bytes(out), f"bit {bit} flipped at stream byte {at}"
    if kind == "flip_trailer":
        at = len(stream) - int(rng.integers(1, 9))     # CRC-32 or ISIZE
        out = bytearray(stream)
        out[at] ^= 0x01
        return bytes(out), f"trailer byte {at} flipped"
    return raw, "stored uncompressed (plain NIfTI named .nii.gz)"


def mutate(rng: np.random.Generator, good: bytes, name: str) -> Mutant:
    """One mutant of `good` (uncompressed NIfTI-1 bytes): header fields, the stream, or both."""
    raw = bytearray(good)
    done: list[str] = []
    choice = rng.random()
    header = choice < 0.55 or choice >= 0.85
    if header:
        for _ in range(int(rng.integers(1, 3))):
            done.append(_header_mutation(rng, raw))
    stream = gzip.compress(bytes(raw), compresslevel=1, mtime=0)
    damaged = False
    if not header or choice >= 0.85:
        stream, what = _stream_mutation(rng, stream, bytes(raw))
        done.append(what)
        # appended bytes and extra members are no damage (Python's gzip refuses them, readers do not)
        damaged = what.startswith(("truncated", "bit", "trailer")) and _fails_check(stream)
    return Mutant(name, stream, done, stream_only=not header, damaged_stream=damaged)

