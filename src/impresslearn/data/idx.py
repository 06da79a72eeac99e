"""Read idx files, the format MNIST and Fashion-MNIST are distributed in.

An idx file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order, big-endian. Files may be
gzip-compressed (``.gz``) or plain. Anything that does not match this layout exactly is a
:class:`~impresslearn.errors.DataError` naming the file and what is wrong with it, never a
traceback from deep inside numpy or gzip.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from impresslearn.errors import DataError

# The standard idx type codes; multi-byte values are stored big-endian.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_bytes(path: Path) -> bytes:
    """Return the content of an idx file, decompressed when its name ends in ``.gz``.

    Raises:
        DataError: the file cannot be read, or its gzip stream is corrupt or cut short.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from error
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{path} is not a valid gzip file ({error}); the download is probably incomplete or "
            "corrupt: replace the file"
        ) from error


def parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """Decode the bytes of an idx file into a writable, native-byte-order array.

    ``path`` is only used in error messages. The payload must hold exactly as many bytes as the
    header announces: a shorter file is truncated, a longer one is not what it claims to be.

    Raises:
        DataError: bad magic number, unknown type code, or a payload of the wrong length.
    """
    if len(raw) == 0:
        raise DataError(f"idx file {path} is empty (0 bytes)")
    if len(raw) < 4:
        raise DataError(f"idx file {path} is truncated: {len(raw)} bytes, not even a magic number")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00":
        raise DataError(
            f"{path} is not an idx file: its magic number 0x{raw[:4].hex()} does not start with "
            "two zero bytes"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x} ({d.name})" for c, d in IDX_DTYPES.items())
        raise DataError(f"idx file {path} has unknown type code 0x{code:02x}; known: {known}")
    if ndim == 0:
        raise DataError(f"idx file {path} declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(
            f"idx file {path} is truncated: {len(raw)} bytes, shorter than its {header_size}-byte "
            f"header for {ndim} dimensions"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = IDX_DTYPES[code]
    count = math.prod(shape)
    expected, found = count * dtype.itemsize, len(raw) - header_size
    if found < expected:
        raise DataError(
            f"idx file {path} is truncated: its header announces shape {shape} of {dtype.name} "
            f"({expected} bytes of data) but only {found} bytes follow"
        )
    if found > expected:
        raise DataError(
            f"idx file {path} is too long: its header announces shape {shape} of {dtype.name} "
            f"({expected} bytes of data) but {found} bytes follow ({found - expected} extra)"
        )
    values = np.frombuffer(raw, dtype=dtype, count=count, offset=header_size)
    # astype copies: the result is writable (torch.from_numpy wants that) and native-endian.
    return values.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (gzip-compressed ``.gz`` or plain) into a numpy array.

    MNIST's image files give a ``(N, 28, 28)`` uint8 array, its label files an ``(N,)`` one.

    Raises:
        DataError: the file is missing, unreadable, corrupt, truncated or not an idx file; the
            message names the file and what is wrong.
    """
    path = Path(path)
    return parse_idx(read_idx_bytes(path), path)
