"""IDX parsing: hand-worked headers, every malformation, and a fuzzer."""

import contextlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.data.idx import IdxFormatError, format_idx, parse_idx, parse_images_labels


def test_hand_worked_header_and_data():
    # magic 0x00000801 (uint8, 1 dim), length 3, then the bytes 7 8 9
    data = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])
    np.testing.assert_array_equal(parse_idx(data), np.array([7, 8, 9], dtype=np.uint8))
    assert format_idx(np.array([7, 8, 9], dtype=np.uint8)) == data


def test_images_are_row_major():
    # 0x00000803, dims (1, 2, 3): the six pixels fill rows first
    data = bytes([0, 0, 8, 3]) + struct.pack(">3I", 1, 2, 3) + bytes(range(6))
    np.testing.assert_array_equal(parse_idx(data)[0], [[0, 1, 2], [3, 4, 5]])


def test_big_endian_wider_types():
    data = bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + struct.pack(">hh", -2, 513)
    np.testing.assert_array_equal(parse_idx(data), [-2, 513])


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\x00\x00", "too short"),
        (b"\x1f\x8b\x08\x00" + bytes(20), "bad magic number"),  # still gzipped
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]), "bad magic number"),  # unknown type
        (bytes([0, 0, 8, 0]), "zero dimensions"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 1]), "truncated header"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3]), "truncated"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]), "trailing bytes"),
    ],
)
def test_malformed_files_are_refused(data, fragment):
    with pytest.raises(IdxFormatError, match=fragment):
        parse_idx(data, what="x")


def _pair(n_images, n_labels, label=3):
    images = format_idx(np.zeros((n_images, 28, 28), np.uint8))
    labels = format_idx(np.full(n_labels, label, np.uint8))
    return images, labels


def test_counts_that_disagree_are_refused():
    with pytest.raises(IdxFormatError, match="3 images but 2 labels"):
        parse_images_labels(*_pair(3, 2), what="train")


def test_labels_out_of_range_are_refused():
    with pytest.raises(IdxFormatError, match=r"outside 0\.\.9"):
        parse_images_labels(*_pair(2, 2, label=10), what="train")


def test_images_of_the_wrong_shape_are_refused():
    images = format_idx(np.zeros((2, 27, 28), np.uint8))
    labels = format_idx(np.zeros(2, np.uint8))
    with pytest.raises(IdxFormatError, match=r"\(N, 28, 28\)"):
        parse_images_labels(images, labels, what="train")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_arbitrary_bytes_parse_or_raise_cleanly(data):
    try:
        arr = parse_idx(data)
    except IdxFormatError:
        return
    assert format_idx(arr) == data  # whatever parses is a faithful reading


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=8, max_size=40), st.integers(0, 39), st.integers(0, 255))
def test_fuzz_one_corrupted_byte_of_a_valid_file(tail, pos, value):
    data = bytearray(bytes([0, 0, 8, 1]) + struct.pack(">I", len(tail)) + tail)
    data[pos % len(data)] = value
    with contextlib.suppress(IdxFormatError):
        parse_idx(bytes(data))


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=5),
    )
)
def test_fuzz_roundtrip(arr):
    back = parse_idx(format_idx(arr))
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)
