"""The Open Inference Protocol codec (``core/oip.py``) and string tensors in frames (``core/tensors.py``):
JSON values checked against their datatype, BYTES in JSON and in binary, requested outputs, request
compression within the body limit."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest

from infaas.core import oip, tensors
from infaas.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType


# ----------------------------------------------------------------------------- strings in frames
@pytest.mark.parametrize("arr", [
    np.array(["a", "", "grün", "漢字"], dtype=object),
    np.array([["x", "y"], ["z", "w"]]),  # numpy's fixed-width str
    np.array([], dtype=object),
    np.array("scalar", dtype=object),
], ids=["object", "fixed-width", "empty", "scalar"])
def test_string_tensors_round_trip_through_frames(arr):
    out = tensors.decode(tensors.encode({"s": arr, "f": np.ones((2,), np.float32)}))
    assert out["s"].dtype == object and out["s"].shape == arr.shape
    assert out["s"].tolist() == arr.tolist()
    np.testing.assert_array_equal(out["f"], np.ones((2,), np.float32))


def test_a_batch_of_string_feeds_is_one_run_of_elements():
    feeds = [{"s": np.array(["a", "bb"], dtype=object)}, {"s": np.array(["ccc"], dtype=object)}]
    parts = tensors.encode_batch_parts(feeds)
    out = tensors.decode(b"".join(bytes(p) for p in parts))
    assert out["s"].tolist() == ["a", "bb", "ccc"]


def test_string_frames_are_checked():
    raw = tensors.serialize_strings(np.array(["ab"], dtype=object))
    assert raw == struct.pack("<I", 2) + b"ab"
    head = json.dumps([{"name": "s", "dtype": "object", "shape": [1], "nbytes": len(raw)}]).encode()
    assert tensors.decode(struct.pack("<I", len(head)) + head + raw)["s"].tolist() == ["ab"]
    for header, payload in (([{"name": "s", "dtype": "object", "shape": [1]}], raw),  # no nbytes
                            ([{"name": "s", "dtype": "object", "shape": [1], "nbytes": 99}], raw),  # past the end
                            ([{"name": "s", "dtype": "object", "shape": [2**40], "nbytes": 6}], raw),  # huge shape
                            ([{"name": "s", "dtype": "object", "shape": [1], "nbytes": 4}], struct.pack("<I", 2) + b"\xff\xfe")):
        head = json.dumps(header).encode()
        with pytest.raises(InvalidInput):
            tensors.decode(struct.pack("<I", len(head)) + head + payload)
    with pytest.raises(InvalidInput, match="holds a int"):
        tensors.serialize_strings(np.array([1, "a"], dtype=object))


# ----------------------------------------------------------------------------- JSON values
@pytest.mark.parametrize("datatype, data", [
    ("FP32", [1.5, True]), ("FP32", ["1.5"]), ("FP64", [None]), ("INT64", [1.5]), ("INT32", [False]),
    ("UINT8", [256]), ("UINT32", [-1]), ("BOOL", [1, 0]), ("BYTES", [1]), ("BYTES", [b"x".decode(), None]),
    ("FP32", [[1.0], 2.0]),
])
def test_json_values_must_be_of_their_datatype(datatype, data):
    with pytest.raises(InvalidInput) as info:
        oip.tensor_from_json({"name": "t", "shape": [len(data)], "datatype": datatype, "data": data}, 0)
    assert info.value.field in ("inputs[0].data", "inputs[0].shape")


@pytest.mark.parametrize("datatype, data, dtype", [
    ("FP32", [1, 2.5], np.float32), ("FP16", [0.5, 2], np.float16), ("BOOL", [True, False], np.bool_),
    ("UINT64", [0, 2**64 - 1], np.uint64), ("INT8", [-128, 127], np.int8), ("BYTES", ["a", "é"], object),
])
def test_json_values_of_every_datatype(datatype, data, dtype):
    name, arr = oip.tensor_from_json({"name": "t", "shape": [2], "datatype": datatype, "data": data}, 0)
    assert name == "t" and arr.dtype == dtype and arr.tolist() == data


def test_nested_json_data_is_read_row_major():
    _, arr = oip.tensor_from_json({"name": "t", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}, 0)
    assert arr.tolist() == [[1, 2], [3, 4]]


def test_duplicate_input_names_are_refused_in_json_and_binary():
    t = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}
    with pytest.raises(InvalidInput) as info:
        oip.tensors_from_json([t, t])
    assert info.value.field == "inputs[1].name"
    raw = np.float32(2.0).tobytes()
    head = json.dumps({"inputs": [t, {**t, "parameters": {"binary_data_size": 4}}]}).encode()
    with pytest.raises(InvalidInput) as info:
        oip.parse_binary(head + raw, len(head))
    assert info.value.field == "inputs[1].name"


def test_binary_bytes_inputs():
    raw = struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0)
    head = json.dumps({"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    _, arrays = oip.parse_binary(head + raw, len(head))
    assert arrays["s"].dtype == object and arrays["s"].tolist() == ["abc", ""]


# ----------------------------------------------------------------------------- outputs
def test_requested_outputs_and_their_binary_flags():
    names, binary, default = oip.requested_outputs(
        {"outputs": [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}]},
        {"binary_data_output": True})
    assert names == ["a", "b"] and binary == {"a": False, "b": True} and default is True
    assert oip.requested_outputs({}, {}) == oip.requested_outputs({"outputs": []}, {}) == (None, {}, False)
    for doc, params, field in (({"outputs": [{"name": "a"}, {"name": "a"}]}, {}, "outputs[1].name"),
                               ({"outputs": [{"name": "a", "parameters": {"binary_data": "yes"}}]}, {},
                                "outputs[0].parameters.binary_data"),
                               ({"outputs": [{"name": "a", "parameters": {"classification": 3}}]}, {},
                                "outputs[0].parameters.classification"),
                               ({}, {"binary_data_output": 1}, "parameters.binary_data_output")):
        with pytest.raises(InvalidInput) as info:
            oip.requested_outputs(doc, params)
        assert info.value.field == field


def test_a_response_mixes_binary_and_json_outputs_as_asked():
    outputs = {"label": np.array(["cat", "dög"], dtype=object), "p": np.array([0.25, 0.75], np.float32)}
    body, n = oip.encode_response({"model_name": "m"}, outputs, {"label": True, "p": False}, False)
    header = json.loads(body[:n])
    label, p = header["outputs"]
    assert label == {"name": "label", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 15}}
    assert body[n:] == struct.pack("<I", 3) + b"cat" + struct.pack("<I", 4) + "dög".encode()
    assert p == {"name": "p", "shape": [2], "datatype": "FP32", "data": [0.25, 0.75]}
    body, n = oip.encode_response({}, outputs, {}, False)
    assert n is None and json.loads(body)["outputs"][0]["data"] == ["cat", "dög"]
    with pytest.raises(InvalidInput) as info:
        oip.select_outputs(outputs, ["p", "nope"])
    assert info.value.field == "outputs[1].name"


# ----------------------------------------------------------------------------- compression
def test_inflate_gzip_and_deflate_in_both_wrappings():
    data = json.dumps({"inputs": list(range(1000))}).encode()
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = raw_deflate.compress(data) + raw_deflate.flush()
    for encoding, body in (("gzip", gzip.compress(data)), ("deflate", zlib.compress(data)), ("deflate", raw),
                           ("identity", data), (None, data), ("GZIP", gzip.compress(data))):
        assert oip.inflate(body, encoding, len(data)) == data


def test_inflate_stops_at_the_limit():
    bomb = gzip.compress(b"\0" * (64 << 20))
    with pytest.raises(PayloadTooLarge) as info:
        oip.inflate(bomb, "gzip", 1 << 20)
    assert "1048576" in info.value.message and info.value.field == "body"
    assert oip.inflate(gzip.compress(b"x" * 1000), "gzip", 1000) == b"x" * 1000  # exactly at the limit


def test_inflate_refuses_what_it_cannot_read():
    with pytest.raises(UnsupportedMediaType) as info:
        oip.inflate(b"{}", "br", 100)
    assert info.value.status == 415 and info.value.field == "content-encoding"
    for body in (b"plain", gzip.compress(b"{}")[:-3], gzip.compress(b"{}") + b"junk"):
        with pytest.raises(InvalidInput):
            oip.inflate(body, "gzip", 100)


def test_an_answer_too_large_as_json_is_refused_before_any_text_is_built():
    """A float32 answer within the worker's byte limit can take six times its size as JSON; past
    the JSON limit it is refused naming ``outputs`` (and binary outputs are the way)."""
    import numpy as np

    from infaas.core import oip
    from infaas.core.errors import InvalidInput

    small = {"y": np.zeros((10, 4), np.float32)}
    assert oip.tensors_to_json(small, limit=1000)[0]["data"] == [0.0] * 40
    big = {"y": np.zeros((1000, 100), np.float32)}  # 400 KB as float32, up to 2.4 MB as JSON
    with pytest.raises(InvalidInput) as err:
        oip.tensors_to_json(big, limit=1 << 20)
    assert err.value.field == "outputs" and "binary" in err.value.message
    words = {"label": np.array(["\x01" * 1000] * 200, dtype=object)}  # control characters: 6 each in JSON
    with pytest.raises(InvalidInput):
        oip.tensors_to_json(words, limit=1 << 20)
    assert oip.json_size_bound(words) >= len(__import__("json").dumps(oip.tensors_to_json(words)[0]["data"]))
