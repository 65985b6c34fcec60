"""Bad input, through the API in process: every malformed or impossible request gets a 4xx
(never a 500) whose JSON body names the problem, and the server still
answers a normal query correctly afterwards.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile

import httpx
import numpy as np
import pytest
from stack_support import ARCHITECTURES, Stack

from infaas.cli import digits
from infaas.core.oip import BINARY_HEADER

ARCH = ARCHITECTURES[0]
DEFAULT_MAX_BODY = 8 << 20
DEFAULT_MAX_ROWS = 4096


@pytest.fixture(autouse=True)
def still_serving(stack: Stack):
    """After every case, a normal query still gets sklearn's answer."""
    yield
    stack.assert_serving()


def expect_error(resp: httpx.Response, status: int | tuple[int, ...], *, error: str | None = None,
                 field: str | None = None, mentions: str | None = None) -> dict:
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, (resp.status_code, resp.text[:500])
    assert resp.status_code != 500
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body  # the message, as the OIP has it
    assert isinstance(body.get("message"), str) and body["message"] == body["error"], body
    assert isinstance(body.get("code"), str) and body["code"], body
    if error is not None:
        assert body["code"] == error, body
    if field is not None:
        assert body.get("field") == field, body
    if mentions is not None:
        assert mentions.lower() in body["message"].lower(), body
    return body


def infer_json(stack: Stack, doc, **kw) -> httpx.Response:
    return stack.http.post("/v1/infer", json=doc, **kw)


def raw_post(stack: Stack, path: str, content: bytes, headers: dict | None = None) -> httpx.Response:
    return stack.http.post(path, content=content, headers={"content-type": "application/json", **(headers or {})})


def oip_binary(stack: Stack, name: str, arr: np.ndarray, *, datatype: str | None = None, size: int | None = None,
               header_len: int | str | None = None, extra: bytes = b"", header_extra: dict | None = None) -> httpx.Response:
    """A binary-extension OIP request whose pieces can be made inconsistent on purpose."""
    from infaas.core.tensors import NUMPY_TO_OIP

    raw = np.ascontiguousarray(arr).tobytes()
    doc = {"inputs": [{"name": "X", "shape": list(arr.shape), "datatype": datatype or NUMPY_TO_OIP[arr.dtype.name],
                       "parameters": {"binary_data_size": len(raw) if size is None else size}}],
           "parameters": {"binary_data_output": True, **(header_extra or {})}}
    head = json.dumps(doc).encode()
    hlen = len(head) if header_len is None else header_len
    return stack.http.post(f"/v2/models/{name}/infer", content=head + raw + extra,
                           headers={BINARY_HEADER: str(hlen), "content-type": "application/octet-stream"})


def oip_tensor(x: np.ndarray, datatype: str = "FP32", **over) -> dict:
    return {"name": "X", "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist(), **over}


def row(stack: Stack, n: int = 1) -> np.ndarray:
    return stack.data.x_test[:n]


# ----------------------------------------------------------------- malformed bodies
@pytest.mark.parametrize("path", ["/v1/infer", f"/v2/models/{ARCH}/infer"])
@pytest.mark.parametrize("body", [b'{"architecture": "logistic-regression", "inputs": [[0.1,',  # truncated
                                  b"{'single': 'quotes'}", b"\xff\xfe\x00garbage", b""],
                         ids=["truncated", "single-quotes", "not-utf8", "empty"])
def test_malformed_json_body(stack: Stack, path: str, body: bytes):
    expect_error(raw_post(stack, path, body), 400, error="invalid_input", field="body")


@pytest.mark.parametrize("path", ["/v1/infer", f"/v2/models/{ARCH}/infer"])
@pytest.mark.parametrize("doc", [[1, 2, 3], "a string", 42, None], ids=["list", "string", "number", "null"])
def test_json_that_is_not_an_object(stack: Stack, path: str, doc):
    expect_error(raw_post(stack, path, json.dumps(doc).encode()), 400, error="invalid_input", field="body",
                 mentions="object")


def test_json_nested_too_deep(stack: Stack):
    """Python's JSON parser raises RecursionError (not ValueError) on deep nesting."""
    deep = b"[" * 100_000  # 100 kB: well under the body limit
    expect_error(raw_post(stack, "/v1/infer", deep), 400, field="body")
    expect_error(raw_post(stack, f"/v2/models/{ARCH}/infer", b'{"inputs": ' + deep), 400, field="body")
    resp = stack.http.post(f"/v2/models/{ARCH}/infer", content=deep,
                           headers={BINARY_HEADER: str(len(deep)), "content-type": "application/octet-stream"})
    expect_error(resp, 400, field="body")


# ----------------------------------------------------------------- shapes and dtypes
def test_wrong_shape_plain_rows(stack: Stack):
    x = row(stack, 2)[:, :63]
    expect_error(infer_json(stack, {"architecture": ARCH, "inputs": x.tolist()}), 400, field="shape", mentions="shape")


def test_ragged_rows(stack: Stack):
    rows = [row(stack)[0].tolist(), row(stack)[0][:10].tolist()]
    expect_error(infer_json(stack, {"architecture": ARCH, "inputs": rows}), 400, field="inputs")


def test_rows_that_are_not_numbers(stack: Stack):
    rows = [["a"] * 64]
    expect_error(infer_json(stack, {"architecture": ARCH, "inputs": rows}), 400, field="inputs")


@pytest.mark.parametrize("inputs", [None, [], "x", 3], ids=["missing", "empty", "string", "number"])
def test_missing_or_empty_inputs(stack: Stack, inputs):
    doc = {"architecture": ARCH} if inputs is None else {"architecture": ARCH, "inputs": inputs}
    expect_error(infer_json(stack, doc), 400, field="inputs")


def test_wrong_shape_oip_json(stack: Stack):
    x = row(stack, 2)[:, :63]
    expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json={"inputs": [oip_tensor(x)]}), 400, field="shape")


def test_wrong_shape_oip_binary(stack: Stack):
    expect_error(oip_binary(stack, ARCH, row(stack, 2)[:, :63]), 400, field="shape")


def test_wrong_rank(stack: Stack):
    x = row(stack, 2).reshape(2, 8, 8)
    expect_error(oip_binary(stack, ARCH, x), 400, field="shape")
    expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json={"inputs": [oip_tensor(row(stack)[0])]}), 400,
                 field="shape")


def test_oip_json_data_does_not_match_shape(stack: Stack):
    t = oip_tensor(row(stack, 2), shape=[3, 64])
    expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json={"inputs": [t]}), 400, field="inputs[0].shape")


@pytest.mark.parametrize("shape", [[-1, 64], "2x64", [2.0, 64], [True, 64]], ids=["negative", "string", "float", "bool"])
def test_oip_json_bad_shape_value(stack: Stack, shape):
    t = oip_tensor(row(stack, 2), shape=shape)
    expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json={"inputs": [t]}), 400, field="inputs[0].shape")


@pytest.mark.parametrize("datatype", ["FP64", "INT64"])
def test_wrong_dtype_oip_json(stack: Stack, datatype: str):
    x = row(stack, 2)
    data = x.astype(np.float64) if datatype == "FP64" else (x * 16).astype(np.int64)
    t = oip_tensor(data, datatype)
    body = expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json={"inputs": [t]}), 400, field="datatype")
    assert "float32" in body["message"]
    body = expect_error(infer_json(stack, {"architecture": ARCH, "inputs": [t]}), 400, field="datatype")
    assert "float32" in body["message"]


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_wrong_dtype_oip_binary(stack: Stack, dtype):
    expect_error(oip_binary(stack, ARCH, row(stack, 2).astype(dtype)), 400, field="datatype", mentions="float32")


@pytest.mark.parametrize("datatype", ["FP128", "STRING", 32, None])
def test_unknown_oip_datatype(stack: Stack, datatype):
    t = oip_tensor(row(stack), datatype=datatype)
    expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json={"inputs": [t]}), 400, field="inputs[0].datatype")


def test_oip_json_data_not_numbers(stack: Stack):
    t = oip_tensor(row(stack), data=["x"] * 64)
    expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json={"inputs": [t]}), 400, field="inputs[0].data")


@pytest.mark.parametrize("inputs", [[], "x", [1, 2], None], ids=["empty", "string", "numbers", "missing"])
def test_oip_json_bad_inputs_list(stack: Stack, inputs):
    doc = {} if inputs is None else {"inputs": inputs}
    body = expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json=doc), 400)
    assert body["field"].startswith("inputs")


def test_two_input_tensors_for_a_single_input_model(stack: Stack):
    x = row(stack)
    doc = {"inputs": [oip_tensor(x), oip_tensor(x, name="Y")]}
    expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json=doc), 400, field="inputs[1].name", mentions="'Y'")


# ----------------------------------------------------------------- non-finite values
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_plain_json(stack: Stack, value: float):
    rows = row(stack, 2).tolist()
    rows[1][5] = value
    body = json.dumps({"architecture": ARCH, "inputs": rows}).encode()  # emits NaN / Infinity tokens
    assert b"NaN" in body or b"Infinity" in body
    expect_error(raw_post(stack, "/v1/infer", body), 400, field="inputs", mentions="nan or infinity")


def test_non_finite_oip_json(stack: Stack):
    x = row(stack, 2).copy()
    x[0, 0] = np.nan
    body = json.dumps({"inputs": [oip_tensor(x)]}).encode()
    expect_error(raw_post(stack, f"/v2/models/{ARCH}/infer", body), 400, field="inputs", mentions="nan")


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_binary(stack: Stack, value):
    x = row(stack, 4).copy()
    x[3, 63] = value
    expect_error(oip_binary(stack, ARCH, x), 400, field="inputs", mentions="nan or infinity")


def test_non_finite_via_python_client(stack: Stack):
    from infaas.client import ApiError

    x = row(stack, 1).copy()
    x[0, 10] = np.nan
    with pytest.raises(ApiError) as info:
        stack.client.infer(x, architecture=ARCH)
    assert info.value.status == 400 and info.value.body["field"] == "inputs"


# ----------------------------------------------------------------- sizes
def test_oversized_body_declared_length(stack: Stack):
    body = b'{"architecture": "logistic-regression", "inputs": [' + b" " * (DEFAULT_MAX_BODY + 1024) + b"]}"
    body_json = expect_error(raw_post(stack, "/v1/infer", body), 413, error="payload_too_large", field="body")
    assert str(DEFAULT_MAX_BODY) in body_json["message"]


def test_oversized_body_streamed_without_length(stack: Stack):
    """Chunked transfer (no Content-Length): the limit counts bytes as they arrive."""
    chunk = b" " * (1 << 20)

    def gen():
        yield b'{"architecture": "logistic-regression", "inputs": ['
        for _ in range(9):
            yield chunk
        yield b"]}"

    resp = stack.http.post("/v1/infer", content=gen(), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    expect_error(resp, 413, error="payload_too_large", field="body")


def test_oversized_binary_oip_body(stack: Stack):
    x = np.zeros(((DEFAULT_MAX_BODY // 256) + 16, 64), dtype=np.float32)  # just over 8 MiB of floats
    expect_error(oip_binary(stack, ARCH, x), 413, error="payload_too_large")


def test_too_many_rows(stack: Stack):
    x = np.zeros((DEFAULT_MAX_ROWS + 1, 64), dtype=np.float32)  # 1 MiB: under the body limit
    body = expect_error(oip_binary(stack, ARCH, x), 413, field="inputs", mentions=str(DEFAULT_MAX_ROWS))
    assert body["code"] == "payload_too_large"


def test_zero_rows(stack: Stack):
    x = np.zeros((0, 64), dtype=np.float32)
    expect_error(oip_binary(stack, ARCH, x), 400, field="shape")


# ----------------------------------------------------------------- unknown targets
@pytest.mark.parametrize("target", [{"architecture": "no-such-model"}, {"task": "classification/no-such-data"},
                                    {"variant": "logistic-regression:onnx-fp16:cpu:b32"},
                                    {"variant": "no-such-model:onnx-fp32:cpu:b32"}],
                         ids=["architecture", "task", "variant-format", "variant-arch"])
def test_unknown_target_plain_json(stack: Stack, target):
    expect_error(infer_json(stack, {**target, "inputs": row(stack).tolist()}), 404, error="not_found", field="target")


@pytest.mark.parametrize("name", ["no-such-model", "classification/no-such-data", "logistic-regression:onnx-fp16:cpu:b32",
                                  "x y", "a/b/c"])
def test_unknown_target_oip(stack: Stack, name: str):
    expect_error(oip_binary(stack, name, row(stack)), 404, error="not_found")
    expect_error(stack.http.post(f"/v2/models/{name}/infer", json={"inputs": [oip_tensor(row(stack))]}), 404)
    expect_error(stack.http.get(f"/v2/models/{name}"), 404, error="not_found")
    expect_error(stack.http.get(f"/v2/models/{name}/ready"), 404, error="not_found")


def test_unknown_model_control_plane(stack: Stack):
    expect_error(stack.http.get("/v1/models/no-such-model"), 404, error="not_found", field="name")
    expect_error(stack.http.delete("/v1/models/no-such-model"), 404, error="not_found", field="name")


# ----------------------------------------------------------------- objectives
def test_impossible_accuracy(stack: Stack):
    resp = infer_json(stack, {"task": digits.TASK, "objective": {"min_accuracy": 0.9999}, "inputs": row(stack).tolist()})
    body = expect_error(resp, 422, error="objective_unreachable", field="objective", mentions="accuracy")
    best = max(v["accuracy"] for s in stack.status.values() for v in s["variants"] if v["status"] == "ready")
    assert body["details"]["best_accuracy"] == pytest.approx(best, abs=1e-4)
    assert body["details"]["best_accuracy"] < 0.9999


def test_impossible_latency(stack: Stack):
    resp = infer_json(stack, {"architecture": ARCH, "objective": {"latency_ms": 1e-6}, "inputs": row(stack).tolist()})
    body = expect_error(resp, 422, error="objective_unreachable", field="objective", mentions="latency")
    assert body["details"]["best_latency_ms"] > 1e-6
    # the same through OIP parameters and the Python client
    from infaas.client import ApiError

    with pytest.raises(ApiError) as info:
        stack.client.infer(row(stack), task=digits.TASK, latency_ms=1e-6)
    assert info.value.status == 422 and info.value.body["details"]["best_latency_ms"] > 0


@pytest.mark.parametrize("objective,field", [
    ({"latency_ms": "fast"}, "objective.latency_ms"),
    ({"latency_ms": "10"}, "objective.latency_ms"),
    ({"min_accuracy": True}, "objective.min_accuracy"),
    ({"min_accuracy": 1.5}, "objective.min_accuracy"),
    ({"min_accuracy": -0.1}, "objective.min_accuracy"),
    ({"latency_ms": 0}, "objective.latency_ms"),
    ({"latency_ms": -5}, "objective.latency_ms"),
    ({"max_cost": [1]}, "objective.max_cost"),
    ("fast please", "objective"),
    ([1, 2], "objective"),
], ids=["latency-string", "latency-numeric-string", "accuracy-bool", "accuracy-above-1", "accuracy-negative",
        "latency-zero", "latency-negative", "cost-list", "objective-string", "objective-list"])
def test_bad_objective_type(stack: Stack, objective, field: str):
    resp = infer_json(stack, {"architecture": ARCH, "objective": objective, "inputs": row(stack).tolist()})
    expect_error(resp, 400, error="invalid_input", field=field)


def test_bad_objective_in_oip_parameters(stack: Stack):
    doc = {"inputs": [oip_tensor(row(stack))], "parameters": {"latency_ms": "fast"}}
    expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json=doc), 400, field="parameters.latency_ms")
    expect_error(oip_binary(stack, ARCH, row(stack), header_extra={"min_accuracy": "high"}), 400,
                 field="parameters.min_accuracy")
    doc = {"inputs": [oip_tensor(row(stack))], "parameters": "fast"}
    expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json=doc), 400, field="parameters")


def test_objective_integer_too_large_for_a_float(stack: Stack):
    huge = "1" + "0" * 400  # a JSON integer Python parses exactly, but no float holds
    body = ('{"architecture": "%s", "objective": {"latency_ms": %s}, "inputs": [[0]]}' % (ARCH, huge)).encode()
    expect_error(raw_post(stack, "/v1/infer", body), 400, field="objective.latency_ms")
    body = ('{"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": %s}], '
            '"parameters": {"max_cost": %s}}' % ([0.0] * 64, huge)).encode()
    expect_error(raw_post(stack, f"/v2/models/{ARCH}/infer", body), 400, field="parameters.max_cost")


def test_number_too_large_in_data(stack: Stack):
    huge = "1" + "0" * 400
    body = ('{"architecture": "%s", "inputs": [[%s%s]]}' % (ARCH, huge, ", 0" * 63)).encode()
    expect_error(raw_post(stack, "/v1/infer", body), 400, field="inputs")
    rows = [[1e39] * 64]  # finite in JSON, infinite as float32
    expect_error(infer_json(stack, {"architecture": ARCH, "inputs": rows}), 400, field="inputs", mentions="infinity")


def test_non_finite_objective(stack: Stack):
    body = json.dumps({"architecture": ARCH, "objective": {"latency_ms": float("nan")}, "inputs": row(stack).tolist()})
    expect_error(raw_post(stack, "/v1/infer", body.encode()), 400, field="objective.latency_ms")


# ----------------------------------------------------------------- targets
@pytest.mark.parametrize("target", [
    {"architecture": ARCH, "task": digits.TASK},
    {"architecture": ARCH, "variant": f"{ARCH}:onnx-fp32:cpu:b32"},
    {},
    {"architecture": 7},
    {"task": ["classification/digits"]},
], ids=["arch+task", "arch+variant", "none", "number", "list"])
def test_target_must_be_exactly_one_string(stack: Stack, target):
    expect_error(infer_json(stack, {**target, "inputs": row(stack).tolist()}), 400, error="invalid_input", field="target")


# ----------------------------------------------------------------- binary framing
def test_binary_header_length_longer_than_body(stack: Stack):
    x = row(stack)
    expect_error(oip_binary(stack, ARCH, x, header_len=10_000), 400, field="headers")


def test_binary_header_length_cuts_the_json(stack: Stack):
    expect_error(oip_binary(stack, ARCH, row(stack), header_len=20), 400, field="body")


@pytest.mark.parametrize("value", ["abc", "-5", "1e3", ""], ids=["word", "negative", "float", "empty"])
def test_binary_header_length_not_a_length(stack: Stack, value: str):
    body = expect_error(oip_binary(stack, ARCH, row(stack), header_len=value), 400)
    assert body["field"] in ("headers", "body")


@pytest.mark.parametrize("delta", [-4, 4, -256])
def test_binary_data_size_inconsistent(stack: Stack, delta: int):
    x = row(stack, 2)
    expect_error(oip_binary(stack, ARCH, x, size=x.nbytes + delta), 400, field="inputs[0].parameters")


@pytest.mark.parametrize("size", ["512", -512, 1.5, True], ids=["string", "negative", "float", "bool"])
def test_binary_data_size_wrong_type(stack: Stack, size):
    body = expect_error(oip_binary(stack, ARCH, row(stack, 2), size=size), 400)
    assert body["field"].startswith("inputs[0]")


def test_binary_trailing_bytes(stack: Stack):
    expect_error(oip_binary(stack, ARCH, row(stack), extra=b"\x00" * 8), 400, field="body", mentions="bytes after")


def test_binary_body_shorter_than_declared_tensor(stack: Stack):
    x = row(stack, 2)
    raw = x.tobytes()
    doc = {"inputs": [{"name": "X", "shape": [2, 64], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}]}
    head = json.dumps(doc).encode()
    resp = stack.http.post(f"/v2/models/{ARCH}/infer", content=head + raw[:-100],
                           headers={BINARY_HEADER: str(len(head)), "content-type": "application/octet-stream"})
    expect_error(resp, 400, field="inputs[0].parameters")


def test_binary_header_not_an_object(stack: Stack):
    head = b"[1, 2]"
    resp = stack.http.post(f"/v2/models/{ARCH}/infer", content=head,
                           headers={BINARY_HEADER: str(len(head)), "content-type": "application/octet-stream"})
    expect_error(resp, 400, field="body")


def test_binary_input_not_an_object(stack: Stack):
    head = json.dumps({"inputs": ["X"]}).encode()
    resp = stack.http.post(f"/v2/models/{ARCH}/infer", content=head,
                           headers={BINARY_HEADER: str(len(head)), "content-type": "application/octet-stream"})
    expect_error(resp, 400, field="inputs[0]")


@pytest.mark.parametrize("outputs", [5, True, "label", ["label"], [{"name": "label", "parameters": [1]}],
                                     [{"name": "label", "parameters": "binary"}]],
                         ids=["int", "bool", "string", "list-of-strings", "parameters-list", "parameters-string"])
def test_oip_requested_outputs_malformed(stack: Stack, outputs):
    doc = {"inputs": [oip_tensor(row(stack))], "outputs": outputs}
    expect_error(stack.http.post(f"/v2/models/{ARCH}/infer", json=doc), 400, field="outputs")


def test_oip_requested_outputs_well_formed(stack: Stack):
    """The valid forms still work: JSON outputs, and binary outputs asked per output."""
    x = row(stack, 3)
    doc = {"inputs": [oip_tensor(x)], "outputs": [{"name": "label"}]}
    resp = stack.http.post(f"/v2/models/{ARCH}/infer", json=doc)
    assert resp.status_code == 200, resp.text
    doc = {"inputs": [oip_tensor(x)], "outputs": [{"name": "label", "parameters": {"binary_data": True}}]}
    resp = stack.http.post(f"/v2/models/{ARCH}/infer", json=doc)
    assert resp.status_code == 200, resp.text
    n = int(resp.headers[BINARY_HEADER])
    header = json.loads(resp.content[:n])
    label = next(o for o in header["outputs"] if o["name"] == "label")
    offset = n
    for o in header["outputs"]:
        if o["name"] == "label":
            break
        offset += o["parameters"]["binary_data_size"]
    got = np.frombuffer(resp.content, dtype=np.int64, count=label["shape"][0], offset=offset)
    np.testing.assert_array_equal(got, stack.expected(ARCH, x))


@pytest.mark.parametrize("params", [[1], "x", 5], ids=["list", "string", "number"])
def test_binary_tensor_parameters_not_an_object(stack: Stack, params):
    head = json.dumps({"inputs": [{**oip_tensor(row(stack)), "parameters": params}]}).encode()
    resp = stack.http.post(f"/v2/models/{ARCH}/infer", content=head,
                           headers={BINARY_HEADER: str(len(head)), "content-type": "application/octet-stream"})
    expect_error(resp, 400, field="inputs[0].parameters")


# ----------------------------------------------------------------- uploads
def register(stack: Stack, *, name: str = "upload-test", file: bytes | None = b"", task: str | None = digits.TASK,
             accuracy: str | None = "0.9", validation: bytes | None = None, omit_file: bool = False,
             extra: dict | None = None) -> httpx.Response:
    data = {k: v for k, v in (("name", name), ("task", task), ("accuracy", accuracy)) if v is not None}
    data.update(extra or {})
    files = {}
    if not omit_file:
        files["file"] = ("model.onnx", file, "application/octet-stream")
    if validation is not None:
        files["validation"] = ("validation.npz", validation, "application/octet-stream")
    return stack.http.post("/v1/models", data=data, files=files or None)


def model_bytes(stack: Stack, arch: str = ARCH) -> bytes:
    with open(stack.paths[arch], "rb") as f:
        return f.read()


def assert_not_registered(stack: Stack, name: str) -> None:
    resp = stack.http.get(f"/v1/models/{name}")
    assert resp.status_code in (400, 404), resp.text
    assert name not in {m["name"] for m in stack.http.get("/v1/models").json()["models"]}


@pytest.mark.parametrize("content", [os.urandom(4096), b"this is a text file, not an ONNX model\n" * 20, b"",
                                     b"\x08\x07\x12\x04test"],  # a tiny valid protobuf with no graph
                         ids=["random-bytes", "text", "empty", "onnx-without-graph"])
def test_bad_model_upload(stack: Stack, content: bytes):
    body = expect_error(register(stack, name="bad-upload", file=content), 400, field="file")
    assert body["code"] in ("invalid_model", "invalid_input")
    assert_not_registered(stack, "bad-upload")


def test_truncated_model_upload(stack: Stack):
    data = model_bytes(stack)
    expect_error(register(stack, name="truncated", file=data[: len(data) // 2]), 400, field="file")
    assert_not_registered(stack, "truncated")


def _tree(root: str) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.join(dirpath, n))
    return out


def _evil_in_tmp() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if "evil" in n}


@pytest.mark.parametrize("name", ["../evil", "../../../../../../evil", "a/b", "x y", "..", ".hidden", "/abs",
                                  "/tmp/evil", "evil\\..\\x", "", "é", "a" * 65, "ok..name", "evil\x00x"])
def test_name_with_path_characters(stack: Stack, name: str):
    base = os.path.dirname(stack.data_dir)  # this session's pytest base temp: the data dir and the workdir
    outside_before = {p for p in _tree(base) if not p.startswith(stack.data_dir + os.sep)}
    models_before = _tree(os.path.join(stack.data_dir, "models"))
    tmp_before = _evil_in_tmp()

    body = expect_error(register(stack, name=name, file=model_bytes(stack)), 400, field="name")
    assert body["code"] == "invalid_input"

    outside_after = {p for p in _tree(base) if not p.startswith(stack.data_dir + os.sep)}
    assert outside_after == outside_before, outside_after - outside_before
    assert _tree(os.path.join(stack.data_dir, "models")) == models_before
    assert not any("evil" in os.path.basename(p) for p in _tree(base))
    assert _evil_in_tmp() <= tmp_before


@pytest.mark.parametrize("path", ["/v1/models/../evil", "/v1/models/a/b", "/v1/models/x y", "/v1/models/..%2Fevil",
                                  "/v1/models/%2e%2e"])
def test_name_with_path_characters_in_the_url(stack: Stack, path: str):
    for method in ("GET", "DELETE"):
        resp = stack.http.request(method, path)
        assert 400 <= resp.status_code < 500, (method, path, resp.status_code, resp.text)
        body = resp.json()
        assert body["error"] and body["message"] and body["code"]
    for arch in ARCHITECTURES:  # nothing was deleted
        assert stack.http.get(f"/v1/models/{arch}").status_code == 200


@pytest.mark.parametrize("task", ["digits", "a/b/c", "../x/y", "classification/", "/digits", "x y/z"])
def test_bad_task_name(stack: Stack, task: str):
    expect_error(register(stack, name="bad-task", file=model_bytes(stack), task=task), 400)
    assert_not_registered(stack, "bad-task")


@pytest.mark.parametrize("accuracy", ["1.5", "-0.1", "nan", "inf", "-inf", "abc", "", "0.9%"])
def test_accuracy_outside_range_or_not_a_number(stack: Stack, accuracy: str):
    expect_error(register(stack, name="bad-accuracy", file=model_bytes(stack), accuracy=accuracy), 400, field="accuracy")
    assert_not_registered(stack, "bad-accuracy")


def test_bad_visibility(stack: Stack):
    expect_error(register(stack, name="bad-visibility", file=model_bytes(stack), extra={"visibility": "public"}), 400,
                 field="visibility")
    assert_not_registered(stack, "bad-visibility")


@pytest.mark.parametrize("missing", ["file", "name", "task", "accuracy"])
def test_missing_form_field(stack: Stack, missing: str):
    kw: dict = {"name": "missing-field", "file": model_bytes(stack)}
    if missing == "file":
        kw["omit_file"] = True
    else:
        kw[missing] = None
    body = expect_error(register(stack, **kw), 400, error="invalid_input", field=missing)
    assert missing in body["message"]
    assert_not_registered(stack, "missing-field")


def test_register_with_json_instead_of_a_form(stack: Stack):
    resp = stack.http.post("/v1/models", json={"name": "json-body", "task": digits.TASK, "accuracy": 0.9})
    expect_error(resp, 400, error="invalid_input")
    assert_not_registered(stack, "json-body")


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _corrupt_compressed_npz(x, y) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, inputs=x, labels=y)
    raw = bytearray(buf.getvalue())
    raw[200:260] = b"\x00" * 60  # inside the deflate stream of 'inputs'
    return bytes(raw)


def _zip_of_garbage() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("inputs.npy", b"not an npy file")
        z.writestr("labels.npy", b"not an npy file")
    return buf.getvalue()


@pytest.mark.parametrize("case", ["wrong-width", "wrong-rank", "label-count", "empty", "missing-labels", "not-npz",
                                  "nan", "pickled-object", "labels-0d", "labels-2d", "npy-not-npz",
                                  "corrupt-compressed", "zip-of-garbage"])
def test_bad_validation_npz(stack: Stack, case: str):
    x, y = stack.data.x_val, stack.data.y_val
    blob = {
        "labels-0d": lambda: _npz(inputs=x, labels=np.int64(3)),
        "labels-2d": lambda: _npz(inputs=x, labels=np.stack([y, y], axis=1)),
        "npy-not-npz": lambda: _npy(x),
        "corrupt-compressed": lambda: _corrupt_compressed_npz(x, y),
        "zip-of-garbage": _zip_of_garbage,
        "wrong-width": lambda: _npz(inputs=x[:, :63], labels=y),
        "wrong-rank": lambda: _npz(inputs=x.reshape(len(x), 8, 8), labels=y),
        "label-count": lambda: _npz(inputs=x, labels=y[:-1]),
        "empty": lambda: _npz(inputs=x[:0], labels=y[:0]),
        "missing-labels": lambda: _npz(inputs=x),
        "not-npz": lambda: b"inputs,labels\n1,2\n",
        "nan": lambda: _npz(inputs=np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x).astype(np.float32), labels=y),
        "pickled-object": lambda: _npz(inputs=np.array([{"a": 1}], dtype=object), labels=y[:1]),
    }[case]()
    name = f"bad-val-{case}"
    expect_error(register(stack, name=name, file=model_bytes(stack), validation=blob), 400, field="validation")
    assert_not_registered(stack, name)


def _edited(blob: bytes, edit) -> bytes:
    import onnx

    model = onnx.load_from_string(blob)
    edit(model)
    return model.SerializeToString()


def _external_data(model) -> None:
    from onnx import TensorProto

    init = model.graph.initializer[0]
    init.data_location = TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", "../../../../../etc/passwd"


def _custom_domain(model) -> None:
    model.graph.node[0].domain = "evil.example"


def _sequence_input(model) -> None:
    vi = model.graph.input[0]
    vi.type.ClearField("tensor_type")
    vi.type.sequence_type.elem_type.tensor_type.elem_type = 1


def _no_opset(model) -> None:
    del model.opset_import[:]


@pytest.mark.parametrize("edit", [_external_data, _custom_domain, _sequence_input, _no_opset],
                         ids=["external-data", "custom-domain", "sequence-input", "no-opset"])
def test_onnx_model_refused_by_the_checks(stack: Stack, edit):
    """Structurally valid ONNX that the service must not accept (a model that
    references external data could make a worker read any file on its host)."""
    blob = _edited(model_bytes(stack, "mlp-32"), edit)  # the MLP has initializers
    body = expect_error(register(stack, name="refused-model", file=blob), 400, field="file")
    assert body["code"] in ("invalid_model", "invalid_input")
    assert_not_registered(stack, "refused-model")


def test_model_with_other_inputs_than_the_task(stack: Stack):
    """A task's architectures take the same inputs: a 63-feature model is refused for the digits task."""
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(max_iter=200).fit(stack.data.x_train[:200, :63], stack.data.y_train[:200])
    blob = digits.to_onnx_bytes(m, stack.data.x_train[:1, :63])
    expect_error(register(stack, name="narrow-model", file=blob), 400, field="file")
    assert_not_registered(stack, "narrow-model")


# ----------------------------------------------------------------- at the end
def test_zz_server_still_answers_everything_correctly(stack: Stack):
    """After every bad request above, both architectures still answer the whole
    test split with scikit-learn's labels, and nothing bad got registered."""
    x = stack.data.x_test
    for arch in ARCHITECTURES:
        outputs, decision = stack.client.infer(x, variant=f"{arch}:onnx-fp32:cpu:b32")
        np.testing.assert_array_equal(outputs["label"], stack.expected(arch, x))
    names = {m["name"] for m in stack.http.get("/v1/models").json()["models"]}
    assert names == set(ARCHITECTURES)
    assert stack.http.get("/v2/health/ready").status_code == 200
    stack.assert_no_internal_errors()
