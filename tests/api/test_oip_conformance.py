"""The Open Inference Protocol v2 (KServe v2 REST, with Triton's binary tensor and statistics
extensions), walked section by section against a real server on 127.0.0.1 (``infaas up`` with one
worker, started here), with the unmodified ``tritonclient.http`` client and raw HTTP.

The models are built here in code (``onnx.helper``, and a scikit-learn classifier with string
labels converted with skl2onnx), registered over the API, built, profiled and served:

- ``oip-float``: ``x`` FP32 [N, 4] -> ``y`` = 2x [N, 4] and ``s`` = the row sums [N]
- ``oip-uint32``: ``ids`` UINT32 [N, 3] -> ``same`` (UINT32) and ``wide`` (INT64)
- ``oip-dtypes``: one input and one output (identity) per OIP datatype, [N, 2] each
- ``oip-text``: ``text`` BYTES [N] -> ``code`` (INT64, a LabelEncoder) and ``echo`` (BYTES)
- ``oip-labels``: an MLP classifier trained on string labels: ``label`` BYTES [N], ``probabilities``
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import zlib
from dataclasses import dataclass

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as tc
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from infaas.client import Client
from infaas.core.oip import BINARY_HEADER
from infaas.local.launcher import StackProcess

READY_TIMEOUT_S = 300.0
MAX_BODY = 8 << 20  # the default INFAAS_MAX_BODY_BYTES

# OIP datatype -> numpy dtype, as the protocol's table has them
DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
             "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
             "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}
ONNX_TYPES = {"BOOL": TensorProto.BOOL, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
              "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "INT8": TensorProto.INT8,
              "INT16": TensorProto.INT16, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64,
              "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
              "BYTES": TensorProto.STRING}
LABELS = np.array(["cat", "dog", "bird"])


# ----------------------------------------------------------------------------- models built in code
def _model(nodes, inputs, outputs, initializers=(), ml: bool = False) -> bytes:
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def float_model() -> bytes:
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    return _model([helper.make_node("Mul", ["x", "two"], ["y"]),
                   helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0)],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
                   helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"])], [two, axes])


def uint32_model() -> bytes:
    return _model([helper.make_node("Identity", ["ids"], ["same"]),
                   helper.make_node("Cast", ["ids"], ["wide"], to=TensorProto.INT64)],
                  [helper.make_tensor_value_info("ids", TensorProto.UINT32, ["N", 3])],
                  [helper.make_tensor_value_info("same", TensorProto.UINT32, ["N", 3]),
                   helper.make_tensor_value_info("wide", TensorProto.INT64, ["N", 3])])


def dtypes_model() -> bytes:
    names = [d.lower() for d in DATATYPES]
    return _model([helper.make_node("Identity", [f"in_{n}"], [f"out_{n}"]) for n in names],
                  [helper.make_tensor_value_info(f"in_{d.lower()}", t, ["N", 2]) for d, t in ONNX_TYPES.items()],
                  [helper.make_tensor_value_info(f"out_{d.lower()}", t, ["N", 2]) for d, t in ONNX_TYPES.items()])


TEXT_KEYS = ["red", "green", "blue", "grün"]


def text_model() -> bytes:
    encode = helper.make_node("LabelEncoder", ["text"], ["code"], domain="ai.onnx.ml", keys_strings=TEXT_KEYS,
                              values_int64s=list(range(1, len(TEXT_KEYS) + 1)), default_int64=-1)
    return _model([encode, helper.make_node("Identity", ["text"], ["echo"])],
                  [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
                  [helper.make_tensor_value_info("code", TensorProto.INT64, ["N"]),
                   helper.make_tensor_value_info("echo", TensorProto.STRING, ["N"])], ml=True)


def bfloat16_output_model() -> bytes:
    """An output the protocol has no datatype for (BF16 is not among the OIP's)."""
    return _model([helper.make_node("Cast", ["x"], ["half"], to=TensorProto.BFLOAT16)],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                  [helper.make_tensor_value_info("half", TensorProto.BFLOAT16, ["N", 2])])


def label_classifier():
    """A small MLP trained on string labels, converted with skl2onnx (its ``label`` is a tensor(string))."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    x = rng.random((300, 4)).astype(np.float32)
    y = LABELS[np.minimum((x[:, 0] * 3).astype(int), 2)]
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=0).fit(x, y)
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}})
    return clf, onx.SerializeToString()


# ----------------------------------------------------------------------------- the stack
@dataclass
class Oip:
    proc: StackProcess
    client: Client
    http: httpx.Client
    triton: tc.InferenceServerClient
    headers: dict[str, str]
    paths: dict[str, str]
    fp32: dict[str, str]  # model -> its fp32 variant id (a version)
    variants: dict[str, list[dict]]
    classifier: object

    def h(self) -> dict[str, str]:
        """The key header, a new dict per call: tritonclient adds its own headers to the dict it is given."""
        return dict(self.headers)

    def ort(self, model: str, feed: dict) -> dict[str, np.ndarray]:
        session = ort.InferenceSession(self.paths[model], providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


MODELS = {"oip-float": ("oip/float", float_model), "oip-uint32": ("oip/uint32", uint32_model),
          "oip-dtypes": ("oip/dtypes", dtypes_model), "oip-text": ("oip/text", text_model)}


@pytest.fixture(scope="module")
def oip(tmp_path_factory: pytest.TempPathFactory) -> Oip:
    workdir = tmp_path_factory.mktemp("oip-work")
    proc = StackProcess(workers=1, data_dir=str(tmp_path_factory.mktemp("oip-data")),
                        log_path=str(workdir / "stack.log"))
    proc.start(timeout_s=90.0)
    client = http = triton = None
    try:
        headers = {"Authorization": f"Bearer {proc.api_key}"}
        client = Client(proc.url, timeout_s=30.0, api_key=proc.api_key)
        http = httpx.Client(base_url=proc.url, timeout=30.0, headers=headers)
        paths = {}
        for name, (task, build) in MODELS.items():
            paths[name] = str(workdir / f"{name}.onnx")
            with open(paths[name], "wb") as f:
                f.write(build())
            client.register(paths[name], name=name, task=task, accuracy=0.9)
        classifier, blob = label_classifier()
        paths["oip-labels"] = str(workdir / "oip-labels.onnx")
        with open(paths["oip-labels"], "wb") as f:
            f.write(blob)
        client.register(paths["oip-labels"], name="oip-labels", task="oip/labels", accuracy=0.9)
        status = client.wait_ready(list(paths), timeout_s=READY_TIMEOUT_S)
        for name, s in status.items():
            assert s["status"] == "ready", f"{name}: {s}\n{proc.log_tail(60)}"
        fp32 = {name: next(v["id"] for v in s["variants"] if v["format"] == "fp32" and v["status"] == "ready")
                for name, s in status.items()}
        triton = tc.InferenceServerClient(url=f"127.0.0.1:{proc.port}", network_timeout=30.0)
        yield Oip(proc, client, http, triton, headers, paths, fp32, {n: s["variants"] for n, s in status.items()},
                  classifier)
        assert "unexpected error" not in open(proc.log_path, errors="replace").read(), proc.log_tail(80)
    finally:
        for c in (client, http, triton):
            if c is not None:
                c.close()
        proc.stop()


def text(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


def triton_error(call, *args, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    return info.value


def json_infer(oip: Oip, model: str, doc: dict, **kw) -> httpx.Response:
    return oip.http.post(f"/v2/models/{model}/infer", json=doc, **kw)


def x4(n: int = 3) -> np.ndarray:
    return (np.arange(n * 4, dtype=np.float32).reshape(n, 4) - 5) / 3


def float_input(x: np.ndarray, binary: bool) -> tc.InferInput:
    i = tc.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    return i


# ============================================================================ health
def test_health_live_and_ready(oip: Oip):
    assert oip.triton.is_server_live(headers=oip.h()) is True
    assert oip.triton.is_server_ready(headers=oip.h()) is True
    live = oip.http.get("/v2/health/live")
    assert live.status_code == 200 and live.json()["live"] is True
    ready = oip.http.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True


# ============================================================================ server metadata
def test_server_metadata(oip: Oip):
    meta = oip.triton.get_server_metadata(headers=oip.h())
    assert meta["name"] == "infaas" and isinstance(meta["version"], str) and meta["version"]
    assert {"binary_tensor_data", "statistics"} <= set(meta["extensions"])


# ============================================================================ model metadata
def test_model_metadata_lists_inputs_outputs_and_versions(oip: Oip):
    meta = oip.triton.get_model_metadata("oip-float", headers=oip.h())
    assert meta["name"] == "oip-float"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]},
                               {"name": "s", "datatype": "FP32", "shape": [-1]}]
    ready = {v["id"] for v in oip.variants["oip-float"] if v["status"] == "ready"}
    assert set(meta["versions"]) == ready and oip.fp32["oip-float"] in meta["versions"]


def test_model_metadata_of_a_task_and_of_a_version(oip: Oip):
    by_task = oip.triton.get_model_metadata("oip/float", headers=oip.h())
    assert by_task["name"] == "oip/float" and by_task["inputs"][0]["name"] == "x"
    version = oip.fp32["oip-float"]
    meta = oip.triton.get_model_metadata("oip-float", model_version=version, headers=oip.h())
    assert meta["name"] == "oip-float" and version in meta["versions"]


def test_model_metadata_of_an_unknown_model_is_a_404_naming_it(oip: Oip):
    err = triton_error(oip.triton.get_model_metadata, "no-such-model", headers=oip.h())
    assert err.status() == "404" and "no-such-model" in err.message()


# ============================================================================ model ready
def test_model_ready(oip: Oip):
    assert oip.triton.is_model_ready("oip-float", headers=oip.h()) is True
    assert oip.triton.is_model_ready("oip-float", oip.fp32["oip-float"], headers=oip.h()) is True
    assert oip.triton.is_model_ready("no-such-model", headers=oip.h()) is False
    assert oip.triton.is_model_ready("oip-float", "oip-float:no-such:cpu:b1", headers=oip.h()) is False
    resp = oip.http.get(f"/v2/models/oip-float/versions/{oip.fp32['oip-float']}/ready")
    assert resp.status_code == 200 and resp.json()["ready"] is True


# ============================================================================ infer
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_answers_what_onnxruntime_answers(oip: Oip, binary: bool):
    x = x4()
    result = oip.triton.infer("oip-float", [float_input(x, binary)], headers=oip.h(),
                              outputs=[tc.InferRequestedOutput("y", binary_data=binary),
                                       tc.InferRequestedOutput("s", binary_data=binary)])
    expected = oip.ort("oip-float", {"x": x})
    np.testing.assert_array_equal(result.as_numpy("y"), expected["y"])
    np.testing.assert_array_equal(result.as_numpy("s"), expected["s"])
    assert result.as_numpy("y").dtype == np.float32
    response = result.get_response()
    assert response["model_name"] == "oip-float" and response["model_version"] in {
        v["id"] for v in oip.variants["oip-float"]}


def test_no_outputs_named_answers_all_of_them_in_binary(oip: Oip):
    """tritonclient asks ``binary_data_output`` when no output is named: every output comes back."""
    x = x4(2)
    result = oip.triton.infer("oip-float", [float_input(x, True)], headers=oip.h())
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["y", "s"]
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)


def test_requested_outputs_only_come_back(oip: Oip):
    x = x4()
    result = oip.triton.infer("oip-float", [float_input(x, False)], headers=oip.h(),
                              outputs=[tc.InferRequestedOutput("s", binary_data=False)])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["s"]
    assert result.as_numpy("y") is None
    np.testing.assert_allclose(result.as_numpy("s"), x.sum(axis=1), rtol=1e-6)
    raw = json_infer(oip, "oip-float", {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32",
                                                     "data": x.ravel().tolist()}], "outputs": [{"name": "y"}]})
    assert raw.status_code == 200 and [o["name"] for o in raw.json()["outputs"]] == ["y"]


def test_an_unknown_output_name_is_a_400_naming_it(oip: Oip):
    err = triton_error(oip.triton.infer, "oip-float", [float_input(x4(), False)], headers=oip.h(),
                       outputs=[tc.InferRequestedOutput("s"), tc.InferRequestedOutput("nope")])
    assert err.status() == "400" and "'nope'" in err.message() and "['s', 'y']" in err.message()
    raw = json_infer(oip, "oip-float", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                                     "data": [1, 2, 3, 4]}], "outputs": [{"name": "nope"}]})
    assert raw.status_code == 400 and raw.json()["field"] == "outputs[0].name"


def test_binary_data_per_output(oip: Oip):
    """One output asked in binary and one in JSON: each comes back as asked."""
    x = x4()
    result = oip.triton.infer("oip-float", [float_input(x, True)], headers=oip.h(),
                              outputs=[tc.InferRequestedOutput("y", binary_data=True),
                                       tc.InferRequestedOutput("s", binary_data=False)])
    outs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert "binary_data_size" in outs["y"]["parameters"] and "data" not in outs["y"]
    assert "data" in outs["s"] and "binary_data_size" not in (outs["s"].get("parameters") or {})
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
    np.testing.assert_allclose(result.as_numpy("s"), x.sum(axis=1), rtol=1e-6)
    # binary_data: false with binary_data_output: true for the rest, over raw HTTP: a plain JSON answer when none is binary
    doc = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": x.ravel().tolist()}],
           "parameters": {"binary_data_output": True},
           "outputs": [{"name": "y", "parameters": {"binary_data": False}}]}
    resp = json_infer(oip, "oip-float", doc)
    assert resp.status_code == 200 and BINARY_HEADER not in resp.headers
    assert resp.json()["outputs"][0]["data"] == (x * 2).ravel().tolist()


def test_response_id_echoes_a_string_and_is_absent_without_one(oip: Oip):
    x = x4(1)
    result = oip.triton.infer("oip-float", [float_input(x, False)], headers=oip.h(), request_id="req-42",
                              outputs=[tc.InferRequestedOutput("s", binary_data=False)])
    assert result.get_response()["id"] == "req-42"
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x.ravel().tolist()}
    resp = json_infer(oip, "oip-float", {"inputs": [tensor]})
    assert resp.status_code == 200 and "id" not in resp.json()
    for bad in (5, 1.5, ["a"], {"a": 1}, True):
        resp = json_infer(oip, "oip-float", {"id": bad, "inputs": [tensor]})
        assert resp.status_code == 400 and resp.json()["field"] == "id", (bad, resp.text)


def test_get_on_infer_is_a_405(oip: Oip):
    for path in ("/v2/models/oip-float/infer", f"/v2/models/oip-float/versions/{oip.fp32['oip-float']}/infer"):
        resp = oip.http.get(path)
        assert resp.status_code == 405 and resp.headers["allow"] == "POST", resp.text
        assert "POST" in resp.json()["error"]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies(oip: Oip, algorithm: str):
    x = x4(4)
    for binary in (False, True):
        result = oip.triton.infer("oip-float", [float_input(x, binary)], headers=oip.h(),
                                  request_compression_algorithm=algorithm,
                                  outputs=[tc.InferRequestedOutput("y", binary_data=binary)])
        np.testing.assert_array_equal(result.as_numpy("y"), x * 2)


def test_a_compressed_body_is_bounded_by_the_body_limit_once_inflated(oip: Oip):
    """A small gzip body that inflates past the body limit is a 413, not a server filling its memory."""
    bomb = gzip.compress(b"[" * (4 * MAX_BODY))  # 32 MiB of '[' in about 32 KiB
    assert len(bomb) < MAX_BODY // 100
    resp = oip.http.post("/v2/models/oip-float/infer", content=bomb,
                         headers={"content-encoding": "gzip", "content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["field"] == "body"
    assert str(MAX_BODY) in resp.json()["error"]
    deflated = zlib.compress(b" " * (MAX_BODY + 1))
    resp = oip.http.post("/v2/models/oip-float/infer", content=deflated, headers={"content-encoding": "deflate"})
    assert resp.status_code == 413


def test_bad_compressed_bodies_are_4xx(oip: Oip):
    resp = oip.http.post("/v2/models/oip-float/infer", content=b"not gzip at all", headers={"content-encoding": "gzip"})
    assert resp.status_code == 400 and resp.json()["field"] == "body" and "gzip" in resp.json()["error"]
    cut = gzip.compress(json.dumps({"inputs": []}).encode())[:-6]
    resp = oip.http.post("/v2/models/oip-float/infer", content=cut, headers={"content-encoding": "gzip"})
    assert resp.status_code == 400 and "truncated" in resp.json()["error"]
    resp = oip.http.post("/v2/models/oip-float/infer", content=b"{}", headers={"content-encoding": "br"})
    assert resp.status_code == 415 and resp.json()["field"] == "content-encoding"


@pytest.mark.parametrize("case", ["wrong-name", "bool-for-float", "string-for-float", "duplicate-name"])
def test_bad_inputs_are_400s_naming_the_field(oip: Oip, case: str):
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5, 1.0, 1.5, 2.0]}
    inputs, field, mention = {
        "wrong-name": ([{**tensor, "name": "input"}], "inputs[0].name", "'input'"),
        "bool-for-float": ([{**tensor, "data": [True, False, True, 1.0]}], "inputs[0].data", "true/false"),
        "string-for-float": ([{**tensor, "data": ["1", 2, 3, 4]}], "inputs[0].data", "strings"),
        "duplicate-name": ([tensor, tensor], "inputs[1].name", "twice"),
    }[case]
    resp = json_infer(oip, "oip-float", {"inputs": inputs})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["field"] == field and mention in body["error"] and body["code"] == "invalid_input", body


def test_a_wrong_input_name_through_tritonclient(oip: Oip):
    wrong = tc.InferInput("input", [1, 4], "FP32")
    wrong.set_data_from_numpy(x4(1), binary_data=True)
    err = triton_error(oip.triton.infer, "oip-float", [wrong], headers=oip.h())
    assert err.status() == "400" and "'input' is not an input of this model" in err.message()


# ============================================================================ versions
def test_versioned_infer_reaches_the_named_version(oip: Oip):
    x = x4()
    for v in oip.variants["oip-labels"]:
        if v["status"] != "ready":
            continue
        result = oip.triton.infer("oip-labels", [float_input_named("X", x, True)], model_version=v["id"],
                                  headers=oip.h())
        assert result.get_response()["model_version"] == v["id"]
        assert result.get_response()["parameters"]["decision"]["variant"] == v["id"]


def test_an_unknown_version_is_a_404(oip: Oip):
    for version in ("oip-float:onnx-fp99:cpu:b32", oip.fp32["oip-uint32"], "1"):  # none of oip-float's
        err = triton_error(oip.triton.infer, "oip-float", [float_input(x4(), True)], model_version=version,
                           headers=oip.h())
        assert err.status() == "404" and version in err.message()
        resp = oip.http.get(f"/v2/models/oip-float/versions/{version}")
        assert resp.status_code == 404 and resp.json()["field"] == "version"
        resp = oip.http.get(f"/v2/models/oip-float/versions/{version}/ready")
        assert resp.status_code == 404


# ============================================================================ errors
def test_error_bodies_carry_the_message_in_error(oip: Oip):
    resp = json_infer(oip, "oip-float", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1]}]})
    body = resp.json()
    assert resp.status_code == 400 and resp.headers["content-type"].startswith("application/json")
    assert body["error"] == body["message"] and "elements" in body["error"]
    assert body["code"] == "invalid_input" and body["field"] == "inputs[0].shape"
    short = tc.InferInput("x", [1, 4], "FP32")
    short.set_data_from_numpy(x4(1), binary_data=False)
    short._data = [1.0]  # a tensor whose data does not fill its shape
    err = triton_error(oip.triton.infer, "oip-float", [short], headers=oip.h())
    assert err.status() == "400" and err.message() == "inputs[0].data has 1 elements, shape [1, 4] needs 4"


def test_errors_of_other_routes_have_the_same_shape(oip: Oip):
    resp = oip.http.get("/v2/models/no-such-model/stats")
    assert resp.status_code == 404 and resp.json()["code"] == "not_found" and "no-such-model" in resp.json()["error"]
    resp = httpx.get(f"{oip.proc.url}/v2/models/oip-float")  # no key
    assert resp.status_code == 401 and resp.json()["code"] == "unauthenticated" and resp.json()["error"]


# ============================================================================ datatypes
def _dtype_values(n: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    out = {}
    for datatype, dtype in DATATYPES.items():
        if datatype == "BOOL":
            v = rng.random((n, 2)) > 0.5
        elif datatype == "BYTES":
            v = np.array([[f"w{i}", "é ü 漢字"] for i in range(n)], dtype=object)
        elif datatype.startswith("FP"):
            v = (rng.standard_normal((n, 2)) * 100).astype(dtype)
        else:
            info = np.iinfo(dtype)
            v = np.array([[info.min, info.max]] * n, dtype=dtype)
            v[-1] = [0, 1]
        out[datatype] = v
    return out


def test_metadata_advertises_every_datatype(oip: Oip):
    meta = oip.triton.get_model_metadata("oip-dtypes", headers=oip.h())
    assert {t["name"]: t["datatype"] for t in meta["inputs"]} == {f"in_{d.lower()}": d for d in DATATYPES}
    assert {t["name"]: t["datatype"] for t in meta["outputs"]} == {f"out_{d.lower()}": d for d in DATATYPES}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_round_trips(oip: Oip, binary: bool):
    values = _dtype_values()
    inputs = []
    for datatype, v in values.items():
        i = tc.InferInput(f"in_{datatype.lower()}", list(v.shape), datatype)
        i.set_data_from_numpy(v, binary_data=binary)
        inputs.append(i)
    outputs = [tc.InferRequestedOutput(f"out_{d.lower()}", binary_data=binary) for d in DATATYPES]
    result = oip.triton.infer("oip-dtypes", inputs, outputs=outputs, headers=oip.h())
    for datatype, v in values.items():
        got = result.as_numpy(f"out_{datatype.lower()}")
        if datatype == "BYTES":  # tritonclient gives BYTES as bytes from binary data, as str from JSON
            assert [[text(b) for b in row] for row in got.tolist()] == v.tolist()
            assert all(isinstance(b, bytes if binary else str) for b in got.ravel())
        else:
            assert got.dtype == v.dtype, datatype
            np.testing.assert_array_equal(got, v, err_msg=datatype)


def test_bytes_in_json_are_strings(oip: Oip):
    doc = {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["red", "grün", "zzz"]}],
           "outputs": [{"name": "code"}, {"name": "echo"}]}
    resp = json_infer(oip, "oip-text", doc)
    assert resp.status_code == 200, resp.text
    outs = {o["name"]: o for o in resp.json()["outputs"]}
    assert outs["echo"] == {"name": "echo", "shape": [3], "datatype": "BYTES", "data": ["red", "grün", "zzz"]}
    assert outs["code"]["datatype"] == "INT64" and outs["code"]["data"] == [1, 4, -1]
    bad = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["red", 5]}]}
    resp = json_infer(oip, "oip-text", bad)
    assert resp.status_code == 400 and resp.json()["field"] == "inputs[0].data" and "integers" in resp.json()["error"]


def test_a_uint32_input_is_advertised_and_accepted_as_uint32(oip: Oip):
    meta = oip.triton.get_model_metadata("oip-uint32", headers=oip.h())
    assert meta["inputs"] == [{"name": "ids", "datatype": "UINT32", "shape": [-1, 3]}]
    ids = np.array([[0, 1, 2**31], [7, 2**32 - 1, 65536]], dtype=np.uint32)
    for binary in (False, True):
        i = tc.InferInput("ids", [2, 3], "UINT32")
        i.set_data_from_numpy(ids, binary_data=binary)
        result = oip.triton.infer("oip-uint32", [i], headers=oip.h(),
                                  outputs=[tc.InferRequestedOutput("same", binary_data=binary),
                                           tc.InferRequestedOutput("wide", binary_data=binary)])
        assert result.as_numpy("same").dtype == np.uint32
        np.testing.assert_array_equal(result.as_numpy("same"), ids)
        np.testing.assert_array_equal(result.as_numpy("wide"), ids.astype(np.int64))
    wrong = tc.InferInput("ids", [2, 3], "INT32")
    wrong.set_data_from_numpy(ids.astype(np.int32), binary_data=True)
    err = triton_error(oip.triton.infer, "oip-uint32", [wrong], headers=oip.h())
    assert err.status() == "400" and "uint32" in err.message()


@pytest.mark.parametrize("value, datatype", [(-1, "UINT32"), (2**32, "UINT32"), (1.5, "INT64"), (300, "UINT8")])
def test_json_values_outside_their_datatype_are_400s(oip: Oip, value, datatype: str):
    doc = {"inputs": [{"name": "ids", "shape": [1, 3], "datatype": datatype, "data": [1, 2, value]}]}
    resp = json_infer(oip, "oip-uint32", doc)
    assert resp.status_code == 400 and resp.json()["field"] in ("inputs[0].data", "datatype"), resp.text


# ============================================================================ binary extension
def _bytes_elements(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def test_binary_bytes_are_length_prefixed_little_endian(oip: Oip):
    """BYTES in the binary extension, by hand: each element a 4-byte little-endian length, then its bytes."""
    words = ["blue", "", "grün"]
    raw = _bytes_elements([w.encode() for w in words])
    head = json.dumps({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": [{"name": "echo", "parameters": {"binary_data": True}},
                                   {"name": "code", "parameters": {"binary_data": True}}]}).encode()
    resp = oip.http.post("/v2/models/oip-text/infer", content=head + raw,
                         headers={BINARY_HEADER: str(len(head)), "content-type": "application/octet-stream"})
    assert resp.status_code == 200, resp.text
    n = int(resp.headers[BINARY_HEADER])
    header = json.loads(resp.content[:n])
    echo, code = header["outputs"]
    assert echo["name"] == "echo" and echo["datatype"] == "BYTES" and echo["shape"] == [3]
    assert echo["parameters"]["binary_data_size"] == len(raw)
    assert resp.content[n : n + len(raw)] == raw
    assert np.frombuffer(resp.content, np.int64, 3, n + len(raw)).tolist() == [3, -1, 4]
    assert len(resp.content) == n + len(raw) + code["parameters"]["binary_data_size"]


@pytest.mark.parametrize("raw, mention", [
    (struct.pack("<I", 100) + b"a" * 20, "element 0 declares 100 bytes"),  # a length past the data
    (_bytes_elements([b"a", b"b"]), "need at least 12 bytes"),  # 10 bytes cannot hold 3 elements
    (_bytes_elements([b"\xff\xfe", b"a", b"b"]), "not UTF-8"),
    (_bytes_elements([b"a", b"b", b"c"]) + b"x", "after its 3 string elements"),
], ids=["length-past-end", "too-few", "not-utf8", "trailing"])
def test_malformed_binary_bytes_are_400s(oip: Oip, raw: bytes, mention: str):
    head = json.dumps({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    resp = oip.http.post("/v2/models/oip-text/infer", content=head + raw,
                         headers={BINARY_HEADER: str(len(head)), "content-type": "application/octet-stream"})
    assert resp.status_code == 400 and mention in resp.json()["error"], resp.text
    assert resp.json()["field"] == "inputs[0].parameters"


def test_binary_bytes_with_a_huge_shape_allocate_nothing(oip: Oip):
    raw = _bytes_elements([b"a"])
    head = json.dumps({"inputs": [{"name": "text", "shape": [2**40], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    resp = oip.http.post("/v2/models/oip-text/infer", content=head + raw,
                         headers={BINARY_HEADER: str(len(head)), "content-type": "application/octet-stream"})
    assert resp.status_code == 400 and "need at least" in resp.json()["error"]


# ============================================================================ statistics
def test_statistics_count_the_answers(oip: Oip):
    version = oip.fp32["oip-uint32"]
    before = oip.triton.get_inference_statistics("oip-uint32", version, headers=oip.h())["model_stats"]
    assert [s["version"] for s in before] == [version] and before[0]["name"] == "oip-uint32"
    counted = before[0]["inference_count"]
    ids = np.array([[1, 2, 3]] * 2, dtype=np.uint32)
    for _ in range(3):
        i = tc.InferInput("ids", [2, 3], "UINT32")
        i.set_data_from_numpy(ids)
        oip.triton.infer("oip-uint32", [i], model_version=version, headers=oip.h())
    after = oip.triton.get_inference_statistics("oip-uint32", version, headers=oip.h())["model_stats"][0]
    assert after["inference_count"] == counted + 6
    assert after["inference_stats"]["success"]["count"] >= before[0]["inference_stats"]["success"]["count"] + 3
    assert after["inference_stats"]["success"]["ns"] > 0 and after["last_inference"] > 0
    every = oip.triton.get_inference_statistics("oip-uint32", headers=oip.h())["model_stats"]
    assert {s["version"] for s in every} == {v["id"] for v in oip.variants["oip-uint32"] if v["status"] == "ready"}
    all_models = oip.triton.get_inference_statistics(headers=oip.h())["model_stats"]
    assert {"oip-float", "oip-uint32", "oip-dtypes", "oip-text", "oip-labels"} <= {s["name"] for s in all_models}


def test_statistics_are_the_owners_and_an_unknown_version_is_a_404(oip: Oip):
    other = {"Authorization": f"Bearer {oip.proc.create_key('another-team', ('query',))}"}
    theirs = oip.triton.get_inference_statistics(headers=other)["model_stats"]
    assert not [s for s in theirs if s["name"].startswith("oip-")]
    err = triton_error(oip.triton.get_inference_statistics, "oip-float", headers=other)
    assert err.status() == "404"  # a private model is nobody else's to see
    err = triton_error(oip.triton.get_inference_statistics, "oip-float", "oip-float:nope:cpu:b1", headers=oip.h())
    assert err.status() == "404" and "nope" in err.message()


# ============================================================================ a string-label classifier
def float_input_named(name: str, x: np.ndarray, binary: bool) -> tc.InferInput:
    i = tc.InferInput(name, list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    return i


def test_string_label_classifier_registers_with_bytes_labels(oip: Oip):
    meta = oip.triton.get_model_metadata("oip-labels", headers=oip.h())
    assert meta["outputs"] == [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                               {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    formats = {v["format"]: v["status"] for v in oip.variants["oip-labels"]}
    assert formats["fp32"] == "ready"
    assert formats.get("int8") in ("ready", "skipped")  # as the builder decides (the MLP has MatMuls: built)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_string_labels_over_tritonclient_equal_onnxruntime(oip: Oip, binary: bool):
    x = np.random.default_rng(3).random((20, 4)).astype(np.float32)
    result = oip.triton.infer("oip-labels", [float_input_named("X", x, binary)], model_version=oip.fp32["oip-labels"],
                              headers=oip.h(), outputs=[tc.InferRequestedOutput("label", binary_data=binary),
                                                           tc.InferRequestedOutput("probabilities", binary_data=binary)])
    expected = oip.ort("oip-labels", {"X": x})
    labels = [text(b) for b in result.as_numpy("label").tolist()]
    assert labels == expected["label"].tolist() == oip.classifier.predict(x).tolist()
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])
    assert result.get_response()["outputs"][0]["datatype"] == "BYTES"


def test_string_labels_over_v1_infer_and_the_python_client(oip: Oip):
    x = np.random.default_rng(4).random((6, 4)).astype(np.float32)
    expected = oip.ort("oip-labels", {"X": x})["label"].tolist()
    resp = oip.http.post("/v1/infer", json={"variant": oip.fp32["oip-labels"], "inputs": x.tolist()})
    assert resp.status_code == 200, resp.text
    label = next(o for o in resp.json()["outputs"] if o["name"] == "label")
    assert label["datatype"] == "BYTES" and label["data"] == expected
    outputs, decision = oip.client.infer(x, variant=oip.fp32["oip-labels"])
    assert outputs["label"].dtype == object and outputs["label"].tolist() == expected
    assert decision["variant"] == oip.fp32["oip-labels"]


def test_int8_string_labels_agree_as_measured(oip: Oip):
    """A quantised variant answers string labels too, agreeing with the registered model as its profile says."""
    v = next((v for v in oip.variants["oip-labels"] if v["format"] == "int8" and v["status"] == "ready"), None)
    assert v is not None, oip.variants["oip-labels"]
    x = np.random.default_rng(9).random((64, 4)).astype(np.float32)
    outputs, decision = oip.client.infer(x, variant=v["id"])
    assert decision["variant"] == v["id"]
    expected = oip.ort("oip-labels", {"X": x})["label"]
    agreement = float(np.mean(outputs["label"] == expected))
    assert set(outputs["label"].tolist()) <= set(LABELS.tolist())
    assert agreement >= min(0.9, v["agreement"] - 0.1), (agreement, v)


def test_string_inputs_over_v1_infer_and_the_python_client(oip: Oip):
    resp = oip.http.post("/v1/infer", json={"architecture": "oip-text", "inputs": ["blue", "red", "other"]})
    assert resp.status_code == 200, resp.text
    outs = {o["name"]: o for o in resp.json()["outputs"]}
    assert outs["code"]["data"] == [3, 1, -1] and outs["echo"]["data"] == ["blue", "red", "other"]
    resp = oip.http.post("/v1/infer", json={"architecture": "oip-text", "inputs": ["blue", 3]})
    assert resp.status_code == 400 and resp.json()["field"] == "inputs"
    outputs, _ = oip.client.infer(np.array(["grün", "green"]), architecture="oip-text")
    assert outputs["code"].tolist() == [4, 2] and outputs["echo"].tolist() == ["grün", "green"]


def test_an_output_the_protocol_cannot_carry_is_refused_at_registration(oip: Oip, tmp_path):
    path = tmp_path / "bf16.onnx"
    path.write_bytes(bfloat16_output_model())
    with open(path, "rb") as f:
        resp = oip.http.post("/v1/models", data={"name": "oip-bf16", "task": "oip/bf16", "accuracy": "0.9"},
                             files={"file": ("bf16.onnx", f.read(), "application/octet-stream")})
    assert resp.status_code == 400, resp.text
    assert "'half' (bfloat16)" in resp.json()["error"] and resp.json()["field"] == "file"
    assert oip.http.get("/v1/models/oip-bf16").status_code == 404


def test_the_stack_logged_no_internal_error(oip: Oip):
    with open(oip.proc.log_path, errors="replace") as f:
        log = f.read()
    assert "unexpected error" not in log and "Exception in ASGI application" not in log, log[-4000:]
    assert os.path.getsize(oip.proc.log_path) > 0
