"""What an input file is, judged from its bytes, and whether it holds the data its header promises.

A file is recognised by its content, not its name: a gzip stream (magic 1f 8b) or a plain single-file
NIfTI-1 (`n+1`) or NIfTI-2 (`n+2`) header, under `.nii` or `.nii.gz` alike. Anything else is "not a
NIfTI image". Only the header (at most 540 bytes, decompressed) is read here; no voxel.

The header is parsed by hand from the NIfTI-1/2 field layout: nibabel would do it, but importing it
costs ~0.2 s of the running time FLARE measures, for a dozen fixed-offset fields. SimpleITK reads the
header too (`ReadImageInformation`), but it neither gives vox_offset nor says what the file holds.

Whether the file holds the data, for a gzip stream without decompressing it when that can be decided:
deflate expands at most 1032-fold, so a stream of S bytes holds at most 1032 * S; the gzip trailer's
ISIZE is the uncompressed size mod 2**32. Only when neither decides is the stream decompressed, in
fixed-size pieces that are thrown away, stopping as soon as the promised size is reached.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from inference import InferenceError

GZIP_MAGIC = b"\x1f\x8b"
# Deflate's largest expansion: a 258-byte match costs at least 2 bits, i.e. 1032 bytes out per byte in.
MAX_DEFLATE_RATIO = 1032
_HEADER_BYTES = {1: 348, 2: 540}
# Where voxel data starts at the earliest: ITK's NIfTI reader takes int(vox_offset) but never less than
# the header's size (a vox_offset of 0 or 100 reads from byte 348; checked against ITK in the fuzz test).
_DATA_START = {1: 348, 2: 540}
_CHUNK = 1 << 22
_READ_CHUNK = 1 << 24
# Bits per voxel of each NIfTI datatype code. Readers size the data by the datatype, so a header whose
# bitpix disagrees is checked by the datatype's size (bitpix is used only for codes not listed here).
DATATYPE_BITS = {2: 8, 4: 16, 8: 32, 16: 32, 32: 64, 64: 64, 128: 24, 256: 8, 512: 16, 768: 32,
                 1024: 64, 1280: 64, 1536: 128, 1792: 128, 2048: 256, 2304: 32}


@dataclass(frozen=True)
class NiftiFile:
    """A NIfTI file as its header describes it. `shape` is the header's dims (x, y, z, ...)."""
    path: Path
    compressed: bool
    version: int                   # 1 or 2
    shape: tuple[int, ...]
    bitpix: int
    vox_offset: int
    datatype: int = 0
    endian: str = "<"
    scl_slope: float = 0.0
    scl_inter: float = 0.0

    @property
    def data_bytes(self) -> int:
        voxels = 1
        for n in self.shape:
            voxels *= n
        return (voxels * self.bitpix + 7) // 8

    @property
    def expected_bytes(self) -> int:
        """Bytes the (uncompressed) file must hold: header and extensions, then every voxel."""
        return self.vox_offset + self.data_bytes

    @property
    def bytes_per_voxel(self) -> float:
        return self.bitpix / 8


def _leading_bytes(path: Path) -> tuple[bool, bytes]:
    """(is gzip, the first 540 bytes of the content, decompressed when gzip)."""
    with open(path, "rb") as f:
        start = f.read(_HEADER_BYTES[2])
    if not start.startswith(GZIP_MAGIC):
        return False, start
    try:
        with gzip.open(path, "rb") as f:
            return True, f.read(_HEADER_BYTES[2])
    except (OSError, EOFError, zlib.error) as e:
        detail = str(e).split("decompressing data: ", 1)[-1]
        raise InferenceError(f"{path}: truncated or corrupt gzip stream ({detail})") from None


@dataclass(frozen=True)
class _Fields:
    """The raw header fields the checks need, in one layout-independent form."""
    version: int
    endian: str
    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    pixdim: tuple[float, ...]
    vox_offset: float
    scl: tuple[float, float]
    qform_code: int
    sform_code: int
    quatern: tuple[float, ...]     # b, c, d, qoffset x, y, z
    srow: tuple[float, ...]        # 12 values, rows x, y, z


def _fields(header: bytes) -> _Fields | None:
    """Unpack a NIfTI-1 or NIfTI-2 header (either byte order); None when it is neither."""
    for e in ("<", ">"):
        if len(header) >= 348 and struct.unpack(e + "i", header[:4])[0] == 348 \
                and header[344:348] == b"n+1\0":
            return _Fields(1, e, struct.unpack(e + "8h", header[40:56]), *struct.unpack(e + "2h", header[70:74]),
                           struct.unpack(e + "8f", header[76:108]), struct.unpack(e + "f", header[108:112])[0],
                           struct.unpack(e + "2f", header[112:120]), *struct.unpack(e + "2h", header[252:256]),
                           struct.unpack(e + "6f", header[256:280]), struct.unpack(e + "12f", header[280:328]))
        if len(header) >= 540 and struct.unpack(e + "i", header[:4])[0] == 540 \
                and header[4:8] == b"n+2\0":
            return _Fields(2, e, struct.unpack(e + "8q", header[16:80]), *struct.unpack(e + "2h", header[12:16]),
                           struct.unpack(e + "8d", header[104:168]), float(struct.unpack(e + "q", header[168:176])[0]),
                           struct.unpack(e + "2d", header[176:192]), *struct.unpack(e + "2i", header[344:352]),
                           struct.unpack(e + "6d", header[352:400]), struct.unpack(e + "12d", header[400:496]))
    return None


# vox_offset beyond this is no real header-plus-extensions size (and overflows readers' 32-bit ints).
_MAX_VOX_OFFSET = 2 ** 31 - 1


def _check_geometry(path: Path, f: _Fields) -> None:
    """Refuse header geometry no image can have, before ITK sees it: spacing (pixdim) must be finite and
    positive, a used qform/sform finite, an sform's axes non-degenerate, vox_offset a sane byte offset."""
    if not (math.isfinite(f.vox_offset) and 0 <= f.vox_offset <= _MAX_VOX_OFFSET):
        raise InferenceError(f"{path}: NIfTI header gives vox_offset {f.vox_offset}, not a valid byte offset "
                             f"of the voxel data (0 to {_MAX_VOX_OFFSET})")
    spatial = f.pixdim[1:1 + min(3, f.dims[0])]
    if not all(math.isfinite(d) and d > 0 for d in spatial):
        raise InferenceError(f"{path}: NIfTI header gives voxel spacing (pixdim) {_fmt(spatial)}; every "
                             f"spacing must be a finite number > 0")
    if f.qform_code > 0 and not all(math.isfinite(v) for v in f.quatern):
        raise InferenceError(f"{path}: NIfTI header's qform (quaternion and offset) {_fmt(f.quatern)} is not "
                             f"finite: the image has no valid orientation")
    if f.sform_code > 0:
        if not all(math.isfinite(v) for v in f.srow):
            raise InferenceError(f"{path}: NIfTI header's sform {_fmt(f.srow)} is not finite: the image has no "
                                 f"valid orientation")
        if _degenerate(f.srow):
            raise InferenceError(f"{path}: NIfTI header's sform {_fmt(f.srow)} is degenerate (its voxel axes do "
                                 f"not span 3D space): the image has no valid orientation")


def _degenerate(srow: tuple[float, ...]) -> bool:
    """Whether the sform's 3x3 part maps the voxel axes onto fewer than 3 independent directions."""
    cols = [[srow[4 * r + c] for r in range(3)] for c in range(3)]
    norms = [math.sqrt(sum(v * v for v in col)) for col in cols]
    if min(norms) == 0:
        return True
    a, b, c = ([v / n for v in col] for col, n in zip(cols, norms))
    det = (a[0] * (b[1] * c[2] - b[2] * c[1]) - b[0] * (a[1] * c[2] - a[2] * c[1])
           + c[0] * (a[1] * b[2] - a[2] * b[1]))
    return abs(det) < 1e-6


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _parse(path: Path, compressed: bool, header: bytes) -> NiftiFile | None:
    """The header's fields, checked, or None when these bytes are no single-file NIfTI-1/2 header."""
    f = _fields(header)
    if f is None:
        return None
    dims, datatype, bitpix, version = f.dims, f.datatype, f.bitpix, f.version
    if not 1 <= dims[0] <= 7:
        raise InferenceError(f"{path}: NIfTI header gives {dims[0]} dimensions (1 to 7 are valid)")
    shape = tuple(int(n) for n in dims[1:dims[0] + 1])
    if any(n < 1 for n in shape):
        raise InferenceError(f"{path}: NIfTI header gives image size {shape}; every size must be >= 1")
    bitpix = DATATYPE_BITS.get(datatype, bitpix)
    if bitpix < 1:
        raise InferenceError(f"{path}: NIfTI header gives {bitpix} bits per voxel")
    _check_geometry(path, f)
    return NiftiFile(path, compressed, version, shape, int(bitpix), max(int(f.vox_offset), _DATA_START[version]),
                     datatype, f.endian, *f.scl)


def inspect(path: Path) -> NiftiFile:
    """Recognise `path` by its content and parse its header; raise InferenceError for anything else."""
    try:
        compressed, header = _leading_bytes(path)
    except OSError as e:
        raise InferenceError(f"{path}: cannot be opened ({e.strerror})") from None
    parsed = _parse(path, compressed, header)
    if parsed is None:
        kind = "gzip stream does not hold" if compressed else "file is neither gzip nor"
        raise InferenceError(f"{path}: not a NIfTI image (the {kind} a single-file NIfTI-1/2 header)")
    return parsed


def _short(nifti: NiftiFile, holds: str) -> InferenceError:
    return InferenceError(f"{nifti.path}: header says {nifti.expected_bytes} bytes, file holds {holds} "
                          f"(image size {nifti.shape}, {nifti.bitpix} bits per voxel)")


def check_size_quick(nifti: NiftiFile) -> bool:
    """Decide from sizes alone whether the file holds what the header promises.

    Raises when it surely does not, returns True when it surely does, False when only decompressing
    the stream can tell (then call `check_size_by_decompressing`). Reads at most the last 4 bytes.
    """
    size = os.path.getsize(nifti.path)
    expected = nifti.expected_bytes
    if not nifti.compressed:
        if size < expected:
            raise _short(nifti, str(size))
        return True
    if size * MAX_DEFLATE_RATIO < expected:
        # Counting exactly is cheap here: the stream cannot expand beyond a size we can afford to skim.
        if size * MAX_DEFLATE_RATIO <= 64 * _CHUNK:
            held, complete = _decompressed_size(nifti.path, expected)
            raise _short(nifti, str(held) if complete else f"{held} (then the gzip stream breaks off)")
        raise _short(nifti, f"at most {size * MAX_DEFLATE_RATIO} ({size} bytes of gzip)")
    # ISIZE is exact only below 4 GiB; above, mod 2**32 could match a short stream by chance.
    if expected < 2 ** 32 and size >= 18:
        with open(nifti.path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            if struct.unpack("<I", f.read(4))[0] == expected:
                return True
    return False


def _decompressed_size(path: Path, stop_at: int) -> tuple[int, bool]:
    """(bytes the gzip stream(s) decompress to, whether it ended properly), stopping once `stop_at`
    bytes are reached. Memory stays at a few chunks: the output is counted and thrown away."""
    total = 0
    decompressor = zlib.decompressobj(wbits=31)
    try:
        with open(path, "rb") as f:
            pending = b""
            while total < stop_at:
                if not pending:
                    pending = f.read(_CHUNK)
                    if not pending:
                        break
                total += len(decompressor.decompress(pending, _CHUNK))
                pending = decompressor.unconsumed_tail
                if decompressor.eof:  # a new gzip member may follow (concatenated streams are valid)
                    pending = decompressor.unused_data + pending
                    if not pending:
                        pending = f.read(_CHUNK)
                        if not pending:
                            return total, True
                    decompressor = zlib.decompressobj(wbits=31)
    except zlib.error:
        return total, False
    return total, total >= stop_at


def check_size_by_decompressing(nifti: NiftiFile) -> None:
    """Decompress the stream (bounded by the size the header promises) to see it holds the data.

    Needed when ISIZE does not match: a truncated stream, extra bytes after the data, or 4 GiB and more.
    ITK would read a short or broken stream silently and fill the missing voxels with zeros.
    """
    held, complete = _decompressed_size(nifti.path, nifti.expected_bytes)
    if held < nifti.expected_bytes:
        raise _short(nifti, f"{held} (then the gzip stream breaks off: truncated or corrupt)"
                     if not complete else str(held))


# Voxel types read without ITK (numpy dtype by NIfTI datatype code); the rest go through ITK's reader.
NUMPY_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4",
               1024: "i8", 1280: "u8"}


def _corrupt(path: Path, why: str) -> InferenceError:
    return InferenceError(f"{path}: corrupt gzip stream: {why}; the file was damaged (e.g. in a copy or "
                          f"transfer): replace it")


def _zlib_problem(e: Exception) -> str:
    """zlib's (or ISA-L's) complaint in words: which trailer check failed."""
    text = str(e)
    if "incorrect data check" in text or "Incorrect checksum" in text:
        return "CRC mismatch (the data is not what was compressed)"
    if "incorrect length check" in text or "Incorrect length" in text:
        return "length mismatch (the trailer's ISIZE disagrees with the data)"
    return f"invalid compressed data ({text.split(': ', 1)[-1]})"


def _inflate_module():
    """ISA-L's zlib-compatible inflate when installed (the `isal` package: about 2x faster than the
    zlib 1.2 behind Python, which is slower than ITK's own zlib-ng), else Python's zlib."""
    try:
        from isal import isal_zlib
        return isal_zlib
    except ImportError:
        return zlib


def _broken_off(nifti: NiftiFile, filled: int) -> InferenceError:
    """The file ended inside a gzip member. A trailer that promises the full size means the file is
    whole and its data damaged (a flipped bit changes how deflate reads on); else it was cut short."""
    if _trailer_isize(nifti.path) == nifti.expected_bytes % 2 ** 32:
        return _corrupt(nifti.path, "damaged compressed data (it runs past the end of the file; the "
                                    "trailer says the stream is complete)")
    if filled < nifti.expected_bytes:
        return _short(nifti, f"{filled} (then the gzip stream breaks off: truncated or corrupt)")
    return _corrupt(nifti.path, "truncated (no end of stream)")


def _trailer_isize(path: Path) -> int | None:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 18:
            return None
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def check_gzip_stream(nifti: NiftiFile) -> None:
    """Decompress the whole stream, throwing the data away, and raise when a CRC-32/ISIZE check fails
    or the stream breaks off: used to explain a file ITK cannot read."""
    read_gzip_verified(nifti, keep=False)


def read_gzip_verified(nifti: NiftiFile, keep: bool = True) -> memoryview | None:
    """The first `expected_bytes` of the decompressed stream (header and voxels), decompressed once,
    with every gzip member's CRC-32 and ISIZE checked (zlib checks the trailer when a member ends).

    A stream whose check fails is refused ("corrupt gzip stream: CRC mismatch"): ITK's reader does not
    check and would hand over garbage voxels. Concatenated members are read as one stream; bytes after
    the last member that are no gzip member are ignored, as ITK (zlib's gzread) ignores them. Bytes
    beyond the header's promise are checked and thrown away. keep False: count, keep nothing.
    """
    inflate = _inflate_module()
    out = bytearray(nifti.expected_bytes if keep else 0)
    view = memoryview(out)
    filled = 0
    with open(nifti.path, "rb") as f:
        d = inflate.decompressobj(wbits=31)
        pending = f.read(_READ_CHUNK)
        try:
            while True:
                piece = d.decompress(pending, _READ_CHUNK * 4)
                take = min(len(piece), nifti.expected_bytes - filled)
                if keep:
                    view[filled:filled + take] = piece[:take]
                filled += take
                pending = d.unconsumed_tail
                if d.eof:
                    pending = d.unused_data + pending
                    if len(pending) < 2:
                        pending += f.read(_READ_CHUNK)
                    if not pending.startswith(GZIP_MAGIC):
                        break   # the end, or trailing bytes that are no gzip member
                    d = inflate.decompressobj(wbits=31)
                elif not pending:
                    pending = f.read(_READ_CHUNK)
                    if not pending:
                        raise _broken_off(nifti, filled)
        except inflate.error as e:
            raise _corrupt(nifti.path, _zlib_problem(e)) from None
    if filled < nifti.expected_bytes:
        raise _short(nifti, str(filled))
    return view if keep else None
