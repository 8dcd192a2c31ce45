"""IDX files, the format of MNIST and Fashion-MNIST: `read_idx` and `write_idx`, plain or gzip-compressed.

The format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number -- two zero bytes, a type code,
the number of dimensions -- then each dimension as a big-endian uint32, then the values in C order, big-endian.

    images = read_idx("train-images-idx3-ubyte.gz")   # (60000, 28, 28) uint8

A file is gzip when it starts with gzip's magic bytes (1f 8b), whatever its name.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from dlforge.errors import DataError

# type code -> element type (big-endian on disk)
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzip detected by its magic bytes), in native byte order and writable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: IDX file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})") from None
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: damaged gzip data ({exc})") from None
    return _parse(raw, path)


def _parse(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4:
        raise DataError(f"{path}: not an IDX file: expected a 4-byte header, found {len(raw)} byte(s)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file: expected magic bytes 00 00, found {raw[0]:02x} {raw[1]:02x}")
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise DataError(f"{path}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header: expected {ndim} dimension sizes ({header} bytes), "
                        f"found {len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        shape = " x ".join(map(str, dims)) or "scalar"
        what = "truncated" if found < expected else "trailing bytes in"
        raise DataError(f"{path}: {what} IDX data: dimensions {shape} of {dtype.name} need {expected} bytes, "
                        f"found {found}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # a native, writable copy


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` as an IDX file, gzip-compressed when the name ends with `.gz`; returns the path."""
    path = Path(path)
    array = np.asarray(array)
    codes = {t.newbyteorder("="): c for c, t in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        known = ", ".join(t.name for t in codes)
        raise DataError(f"{path}: IDX cannot hold {array.dtype}; convert the array to one of {known}")
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise DataError(f"{path}: IDX holds at most 255 dimensions of < 2**32 each, got shape {array.shape}")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    blob = header + np.ascontiguousarray(array, dtype=IDX_TYPES[codes[native]]).tobytes()
    if path.name.endswith(".gz"):
        blob = gzip.compress(blob, mtime=0)  # mtime 0: the same array gives the same bytes
    path.write_bytes(blob)
    return path
