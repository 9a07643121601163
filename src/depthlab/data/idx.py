"""Reading and writing IDX files (the MNIST / Fashion-MNIST container format).

Layout (all integers big-endian): two zero bytes, one type byte, one byte giving the number of
dimensions ``k``, then ``k`` unsigned 32-bit sizes, then the data in C order.
Gzip-compressed files (``.gz`` or starting with the gzip magic ``1f 8b``) are read transparently.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

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


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {str(path)!r}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{str(path)!r}: corrupt gzip stream ({exc})") from exc
    return raw


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes: magic ``00 00 type ndim``, ``ndim`` big-endian uint32 sizes, data.

    Returns a native-byte-order array of shape ``(d_1, ..., d_ndim)``.
    """
    if len(raw) < 4:
        raise ValueError(f"{source!r}: not an IDX file ({len(raw)} bytes, need a 4-byte magic)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(
            f"{source!r}: bad IDX magic number {raw[:4].hex()!r}; expected 00 00 <type> <ndim> "
            f"with "
            f"type in {[hex(c) for c in IDX_TYPES]}"
        )
    ndim = raw[3]
    if ndim == 0:
        raise ValueError(f"{source!r}: bad IDX magic number {raw[:4].hex()!r} (0 dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{source!r}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    count = int(np.prod(dims, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{source!r}: IDX size mismatch: header says shape {dims} of {dtype.str} "
            f"({expected} bytes in all) but the file has {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a NumPy array."""
    p = Path(path)
    return parse_idx(_read_bytes(p), str(p))


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
