"""Reading and writing IDX files (the MNIST / Fashion-MNIST container format).

Layout (all integers big-endian): two zero bytes, one type byte, one byte giving the number of
dimensions ``k``, then ``k`` unsigned 32-bit sizes, then the data in C order.
Gzip-compressed files (``.gz`` or starting with the gzip magic ``1f 8b``) are read transparently,
streamed, and must hold exactly the number of bytes their header declares.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from depthlab.memory import check_array

# IDX type byte -> big-endian NumPy dtype.
IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_CODE_FOR_KIND = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 24


def _open(path: Path) -> BinaryIO:
    """The file's bytes as a stream, inflated on the fly when it starts with the gzip magic
    (opened by its path: closing a ``GzipFile`` given a ``fileobj`` left that file open, one
    descriptor leaked per file read)."""
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {str(path)!r}")
    fh = open(path, "rb")  # noqa: SIM115 - returned to the caller's ``with``
    if fh.read(2) == _GZIP_MAGIC:
        fh.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    fh.seek(0)
    return fh


def _header(magic: bytes, source: str) -> tuple[np.dtype, int]:
    if len(magic) < 4:
        raise ValueError(f"{source!r}: not an IDX file ({len(magic)} bytes, need a 4-byte magic)")
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES:
        raise ValueError(
            f"{source!r}: bad IDX magic number {magic[:4].hex()!r}; expected 00 00 <type> <ndim> "
            f"with type in {[hex(c) for c in IDX_TYPES]}"
        )
    if magic[3] == 0:
        raise ValueError(f"{source!r}: bad IDX magic number {magic[:4].hex()!r} (0 dimensions)")
    return np.dtype(IDX_TYPES[magic[2]]), int(magic[3])


def _size_mismatch(source: str, dims: tuple, dtype: np.dtype, expected: int, what: str) -> str:
    return (f"{source!r}: IDX size mismatch: header says shape {dims} of {dtype.str} "
            f"({expected} bytes in all) but the file {what}")


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes: magic ``00 00 type ndim``, ``ndim`` big-endian uint32 sizes, data.

    Returns a native-byte-order array of shape ``(d_1, ..., d_ndim)``.
    """
    dtype, ndim = _header(raw[:4], source)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{source!r}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = math.prod(dims)
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(_size_mismatch(source, dims, dtype, expected, f"has {len(raw)} bytes"))
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _read_stream(fh: BinaryIO, source: str) -> np.ndarray:
    dtype, ndim = _header(fh.read(4), source)
    head = fh.read(4 * ndim)
    header = 4 + 4 * ndim
    if len(head) < 4 * ndim:
        raise ValueError(f"{source!r}: truncated IDX header ({4 + len(head)} bytes, need "
                         f"{header})")
    dims = tuple(int(d) for d in np.frombuffer(head, dtype=">u4"))
    expected = header + math.prod(dims) * dtype.itemsize
    check_array(dims, dtype, f"IDX file {source!r}")  # before allocating the declared size
    out = np.empty(dims, dtype=dtype)
    view = memoryview(out.reshape(-1).view(np.uint8))
    got = 0
    while got < len(view):
        n = fh.readinto(view[got : got + _CHUNK])
        if not n:
            raise ValueError(_size_mismatch(source, dims, dtype, expected,
                                            f"has only {header + got} bytes"))
        got += n
    if fh.read(1):  # stop at the declared size: one byte more is enough to refuse
        raise ValueError(_size_mismatch(source, dims, dtype, expected,
                                        "is longer (data after the declared size)"))
    return out.astype(dtype.newbyteorder("="), copy=False)


def idx_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype that the IDX file ``path`` declares (its header alone is read, through
    gzip when compressed). Raises ValueError for a file that is not IDX."""
    p = Path(path)
    try:
        with _open(p) as fh:
            dtype, ndim = _header(fh.read(4), str(p))
            head = fh.read(4 * ndim)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{str(p)!r}: corrupt gzip stream ({exc})") from exc
    if len(head) < 4 * ndim:
        raise ValueError(f"{str(p)!r}: truncated IDX header ({4 + len(head)} bytes, need "
                         f"{4 + 4 * ndim})")
    return tuple(int(d) for d in np.frombuffer(head, dtype=">u4")), dtype


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a NumPy array.

    The file is streamed: the header's shape is checked against the memory available before
    the array is allocated, and reading stops at the declared size, so a file that is shorter
    or longer than its header says (or a gzip bomb) is refused without inflating it all.
    """
    p = Path(path)
    try:
        with _open(p) as fh:
            return _read_stream(fh, str(p))
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{str(p)!r}: corrupt gzip stream ({exc})") from exc


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz``).

    Accepted dtypes: uint8, int8, int16, int32, float32, float64; at least one dimension.
    """
    a = np.asarray(array)
    if a.dtype not in _CODE_FOR_KIND:
        raise TypeError(
            f"cannot write dtype {a.dtype} as IDX; accepted: {[str(d) for d in _CODE_FOR_KIND]}"
        )
    if a.ndim < 1 or a.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {a.ndim}")
    code = _CODE_FOR_KIND[a.dtype]
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder(">")).tobytes()
    p = Path(path)
    blob = header + body
    if p.name.endswith(".gz"):
        blob = gzip.compress(blob, compresslevel=6)
    p.write_bytes(blob)
    return p


def looks_like_idx(path: str | os.PathLike) -> bool:
    """True when the file starts (after gunzip) with a valid IDX magic number."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(p, "rb") as g:
                magic = g.read(4)
        else:
            with open(p, "rb") as f:
                magic = f.read(4)
    except (OSError, EOFError):
        return False
    return len(magic) == 4 and magic[0] == 0 and magic[1] == 0 and magic[2] in IDX_TYPES
