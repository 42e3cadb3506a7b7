"""The IDX file format of MNIST and Fashion-MNIST: strict parsing and byte-exact writing.

Layout (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the number of
dimensions, then one big-endian uint32 per dimension, then the data in C order, big-endian.
"""

from __future__ import annotations

import struct

import numpy as np

from pipeline.files import DataError

# IDX type code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}


class IdxFormatError(DataError):
    """Bytes that are not a well-formed IDX file."""


def parse_idx(data: bytes, *, what: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes into a native-endian array, validating everything the header claims.

    Inputs:
    - data: the whole (uncompressed) file.
    - what: a name for error messages.
    Returns:
    - array of the header's shape and dtype (uint8 for MNIST).
    Raises IdxFormatError on a bad magic number, unknown type, truncated or oversized data.
    """
    if len(data) < 4:
        raise IdxFormatError(f"{what}: {len(data)} bytes is too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in IDX_DTYPES:
        raise IdxFormatError(
            f"{what}: bad magic number 0x{data[:4].hex()} (expected 0x0000 then a type code "
            f"in {sorted(hex(c) for c in IDX_DTYPES)} and a dimension count); is it still gzipped?"
        )
    if ndim == 0:
        raise IdxFormatError(f"{what}: header declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{what}: truncated header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxFormatError(
            f"{what}: {kind}: header {shape} of {dtype.name} needs {expected} bytes, "
            f"found {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def format_idx(arr: np.ndarray) -> bytes:
    """Serialise an array as IDX bytes (the exact inverse of `parse_idx`)."""
    arr = np.asarray(arr)
    native = arr.dtype.newbyteorder("=")
    if native not in _CODES:
        raise IdxFormatError(f"dtype {arr.dtype} has no IDX type code")
    if arr.ndim == 0 or arr.ndim > 255:
        raise IdxFormatError(f"IDX needs 1 to 255 dimensions, got {arr.ndim}")
    header = struct.pack(f">HBB{arr.ndim}I", 0, _CODES[native], arr.ndim, *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=native.newbyteorder(">")).tobytes()


def parse_images_labels(
    image_bytes: bytes, label_bytes: bytes, *, what: str, classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Parse one images/labels pair and check they describe the same samples.

    Returns:
    - images: (N, 28, 28) uint8
    - labels: (N,) uint8, each in [0, classes)
    """
    images = parse_idx(image_bytes, what=f"{what} images")
    labels = parse_idx(label_bytes, what=f"{what} labels")
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IdxFormatError(
            f"{what} images: expected uint8 of shape (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IdxFormatError(f"{what} labels: expected uint8 of shape (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{what}: {len(images)} images but {len(labels)} labels; the two files do not belong "
            "together"
        )
    if labels.size and labels.max() >= classes:
        raise IdxFormatError(f"{what} labels: value {labels.max()} outside 0..{classes - 1}")
    return images, labels
