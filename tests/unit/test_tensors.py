"""Binary tensor frames: ``<u32 header length><JSON header><raw little-endian bytes>``."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from infaas.core.errors import InvalidInput
from infaas.core.tensors import decode, encode


def frame(header, payload: bytes = b"") -> bytes:
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<I", len(head)) + head + payload


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        np.array([[1e-300, -2.5, np.inf]], dtype=np.float64),
        np.array([0.5, -1.25, 65504.0], dtype=np.float16),
        np.array([[-(2**62), 2**62 + 1]], dtype=np.int64),
        np.array([-(2**31), 2**31 - 1], dtype=np.int32),
        np.array([-32768, 32767], dtype=np.int16),
        np.array([-128, 0, 127], dtype=np.int8),
        np.arange(256, dtype=np.uint8).reshape(2, 8, 16),
        np.array([[True, False], [False, True]]),
        np.zeros((0, 64), dtype=np.float32),  # zero rows
        np.zeros((5, 0), dtype=np.int64),
        np.array(3.25, dtype=np.float32),  # a scalar
    ],
    ids=lambda a: f"{a.dtype}{list(a.shape)}",
)
def test_round_trip(arr):
    out = decode(encode({"x": arr}))
    assert list(out) == ["x"]
    assert out["x"].dtype == arr.dtype
    assert out["x"].shape == arr.shape
    np.testing.assert_array_equal(out["x"], arr)


def test_several_tensors_keep_their_names_order_and_bytes():
    tensors = {
        "input": np.arange(6, dtype=np.float32).reshape(2, 3),
        "mask": np.array([True, False]),
        "ids": np.zeros((0, 3), dtype=np.int64),
        "last": np.array([7], dtype=np.uint8),
    }
    data = encode(tensors)
    out = decode(data)
    assert list(out) == ["input", "mask", "ids", "last"]
    for name, arr in tensors.items():
        assert out[name].dtype == arr.dtype and out[name].shape == arr.shape
        np.testing.assert_array_equal(out[name], arr)
    # 4 + header + 24 + 2 + 0 + 1 bytes: the raw data is not inflated
    (n,) = struct.unpack_from("<I", data)
    assert len(data) == 4 + n + 24 + 2 + 0 + 1


def test_big_endian_and_non_contiguous_inputs_are_written_little_endian_c_order():
    big = np.arange(6, dtype=">i4").reshape(2, 3)
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T
    out = decode(encode({"big": big, "t": transposed}))
    assert out["big"].dtype == np.dtype("<i4")
    np.testing.assert_array_equal(out["big"], big)
    np.testing.assert_array_equal(out["t"], transposed)
    raw = encode({"big": big})
    assert raw.endswith(np.arange(6, dtype="<i4").tobytes())


def test_empty_frame_of_no_tensors():
    assert decode(encode({})) == {}


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x00\x00\x00"], ids=["empty", "1-byte", "3-bytes"])
def test_shorter_than_the_length_prefix(data):
    with pytest.raises(InvalidInput):
        decode(data)


def test_header_length_beyond_the_body():
    good = encode({"x": np.zeros(2, np.float32)})
    with pytest.raises(InvalidInput):
        decode(struct.pack("<I", len(good)) + good[4:])
    with pytest.raises(InvalidInput):
        decode(struct.pack("<I", 0xFFFFFFFF) + b"[]")


def test_truncated_tensor_data():
    good = encode({"x": np.arange(10, dtype=np.float32)})
    for cut in (1, 4, 40):
        with pytest.raises(InvalidInput, match="needs 40 bytes"):
            decode(good[:-cut])


def test_trailing_bytes():
    good = encode({"x": np.arange(10, dtype=np.float32)})
    with pytest.raises(InvalidInput, match="trailing"):
        decode(good + b"\x00")
    with pytest.raises(InvalidInput, match="trailing"):
        decode(frame([]) + b"junk")


@pytest.mark.parametrize(
    "header",
    [
        b"not json",
        b"\xff\xfe",  # not UTF-8
        b"5",  # JSON, but not a list
        b'{"name": "x"}',
        b'"x"',
        [5],
        [{"dtype": "float32", "shape": [1]}],  # no name
        [{"name": "x", "shape": [1]}],  # no dtype
        [{"name": "x", "dtype": "float32"}],  # no shape
        [{"name": "x", "dtype": "float32", "shape": 1}],
        [{"name": "x", "dtype": "float32", "shape": ["a"]}],
        [{"name": "x", "dtype": "float32", "shape": [-1]}],
        [{"name": 7, "dtype": "float32", "shape": [1]}],
        [{"name": "x", "dtype": "no-such-type", "shape": [1]}],
        [{"name": "x", "dtype": "object", "shape": [1]}],  # pointers, not data
        [{"name": "x", "dtype": "V0", "shape": [1]}],  # zero-size items
        [{"name": "x", "dtype": "complex64", "shape": [1]}],
        [{"name": "x", "dtype": ["float32"], "shape": [1]}],
        [{"name": "x", "dtype": "float32", "shape": [2**62, 2**62]}],  # would overflow int64
    ],
)
def test_bad_header_is_invalid_input(header):
    with pytest.raises(InvalidInput):
        decode(frame(header, b"\x00" * 8))
