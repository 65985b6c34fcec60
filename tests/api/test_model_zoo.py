"""A zoo of models shaped as real ones are, built here in code (``onnx.helper``, scikit-learn),
each registered on a real server on 127.0.0.1 (``infaas up`` with one worker, started here), built,
profiled, and queried over the Open Inference Protocol (``tritonclient.http``, JSON and binary,
requested outputs, versions) and ``/v1/infer``, its every output compared with onnxruntime on the
registered file: fp32 variants exactly; other variants exactly with onnxruntime on their own built
file, and with the registered model within the agreement the build measured.

| model | inputs | signature (inferred unless said) |
|---|---|---|
| ``zoo-stream`` | ``audio`` FP32 [N, 160], ``rate`` INT64 [1], ``state`` FP32 [2, N, 16] | ``N`` batch: audio axis 0, state axis 1; ``rate`` per request |
| ``zoo-gru`` | ``x`` FP32 [T, N, 8], ``h0`` FP32 [1, N, 16] (a GRU, state in and out) | batch axis 1; ``T`` sized at registration (``dims``) |
| ``zoo-detector`` | ``image`` FP32 [N, 3, H, W] | axis 0; ``H``, ``W`` sized by the CLI's ``--dim`` |
| ``zoo-labels`` | ``X`` FP32 [N, 4] -> ``label`` BYTES | axis 0, joined |
| ``zoo-uint32`` | ``ids`` UINT32 [N, 3] | axis 0, joined |
| ``zoo-control`` | ``x`` FP32 [N, 4], ``flag`` BOOL [1], ``steps`` INT64 [1] (``If`` and ``Loop``) | axis 0; flag, steps per request |
| ``zoo-text`` | ``input_ids``, ``attention_mask`` INT64 [batch, seq] | ``batch`` axis 0; ``seq`` sized at registration |
"""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as tc
from onnx import TensorProto, helper, numpy_helper
from test_oip_conformance import label_classifier, uint32_model

from infaas.cli import main as cli_main
from infaas.client import Client
from infaas.local.launcher import StackProcess
from infaas.runtime.profile import agreement

READY_TIMEOUT_S = 240.0
RNG = np.random.default_rng(3)
NP_TO_OIP = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.bool_): "BOOL",
             np.dtype(np.uint32): "UINT32"}


def _w(name: str, *shape: int, scale: float = 0.5) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _i64(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _f32(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def _model(nodes, inputs, outputs, inits=(), opset: int = 17) -> bytes:
    graph = helper.make_graph(nodes, "zoo", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


V = helper.make_tensor_value_info


def stream_model() -> bytes:
    """A streaming model: a chunk of audio per row, the sample rate (one per request), a state
    tensor whose batch is axis 1; answers features and the next state."""
    nodes = [
        helper.make_node("MatMul", ["audio", "w"], ["feat"]),
        helper.make_node("Cast", ["rate"], ["rate_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["rate_f", "k16000"], ["scale"]),
        helper.make_node("Mul", ["feat", "scale"], ["scaled"]),
        helper.make_node("Unsqueeze", ["scaled", "ax0"], ["scaled3"]),
        helper.make_node("Mul", ["state", "half"], ["decayed"]),
        helper.make_node("Add", ["decayed", "scaled3"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["state_out"]),
        helper.make_node("ReduceMean", ["state_out"], ["out"], axes=[0], keepdims=0),
    ]
    return _model(nodes,
                  [V("audio", TensorProto.FLOAT, ["N", 160]), V("rate", TensorProto.INT64, [1]),
                   V("state", TensorProto.FLOAT, [2, "N", 16])],
                  [V("out", TensorProto.FLOAT, ["N", 16]), V("state_out", TensorProto.FLOAT, [2, "N", 16])],
                  [_w("w", 160, 16, scale=0.1), _f32("k16000", [16000.0]), _f32("half", [0.5]), _i64("ax0", [0])])


def gru_model() -> bytes:
    """A stateful recurrent model: a GRU over [T, N, 8] with its hidden state in and out."""
    gru = helper.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["y", "h"], hidden_size=16)
    return _model([gru], [V("x", TensorProto.FLOAT, ["T", "N", 8]), V("h0", TensorProto.FLOAT, [1, "N", 16])],
                  [V("y", TensorProto.FLOAT, ["T", 1, "N", 16]), V("h", TensorProto.FLOAT, [1, "N", 16])],
                  [_w("W", 1, 48, 8), _w("R", 1, 48, 16), _w("B", 1, 96, scale=0.1)])


def detector_model() -> bytes:
    """A detector-like model with dynamic height and width: a strided convolution, a pooled branch
    upsampled back and added (at size 1 the pooled branch is empty), a heat map and per-class scores."""
    nodes = [
        helper.make_node("Conv", ["image", "cw", "cb"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["p", "", "two"], ["u"], mode="nearest"),
        helper.make_node("Add", ["r", "u"], ["heat"]),
        helper.make_node("ReduceMax", ["heat"], ["scores"], axes=[2, 3], keepdims=0),
    ]
    return _model(nodes, [V("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                  [V("heat", TensorProto.FLOAT, ["N", 4, "Ho", "Wo"]), V("scores", TensorProto.FLOAT, ["N", 4])],
                  [_w("cw", 4, 3, 3, 3), _w("cb", 4, scale=0.1), _f32("two", [1.0, 1.0, 2.0, 2.0])], opset=17)


def control_model() -> bytes:
    """Control flow: ``If`` on a per-request flag, then a ``Loop`` run ``steps`` times."""
    then_g = helper.make_graph([helper.make_node("Mul", ["h", "k2"], ["t"])], "then", [],
                               [V("t", TensorProto.FLOAT, None)], initializer=[_f32("k2", [2.0])])
    else_g = helper.make_graph([helper.make_node("Add", ["h", "k1"], ["e"])], "else", [],
                               [V("e", TensorProto.FLOAT, None)], initializer=[_f32("k1", [1.0])])
    body = helper.make_graph(
        [helper.make_node("Tanh", ["v_in"], ["th"]), helper.make_node("Mul", ["th", "k09"], ["sc"]),
         helper.make_node("Add", ["sc", "k01"], ["v_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [V("i", TensorProto.INT64, []), V("cond_in", TensorProto.BOOL, []), V("v_in", TensorProto.FLOAT, None)],
        [V("cond_out", TensorProto.BOOL, []), V("v_out", TensorProto.FLOAT, None)],
        initializer=[_f32("k09", [0.9]), _f32("k01", [0.1])])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Squeeze", ["flag", "ax0"], ["cond"]),
        helper.make_node("If", ["cond"], ["y0"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Squeeze", ["steps", "ax0"], ["m"]),
        helper.make_node("Loop", ["m", "true", "y0"], ["y"], body=body),
    ]
    return _model(nodes, [V("x", TensorProto.FLOAT, ["N", 4]), V("flag", TensorProto.BOOL, [1]),
                          V("steps", TensorProto.INT64, [1])],
                  [V("y", TensorProto.FLOAT, ["N", 4])],
                  [_w("w", 4, 4), _i64("ax0", [0]), numpy_helper.from_array(np.array(True), "true")])


def text_model() -> bytes:
    """A transformer-style text classifier: token ids and an attention mask of dynamic length, one
    self-attention layer, masked mean pooling, logits; the hidden states come back too."""
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["e", "wq"], ["q"]),
        helper.make_node("MatMul", ["e", "wk"], ["k"]),
        helper.make_node("MatMul", ["e", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Mul", ["qk", "inv_sqrt"], ["scaled"]),
        helper.make_node("Sub", ["m", "one"], ["mneg"]),
        helper.make_node("Mul", ["mneg", "big"], ["bias2"]),
        helper.make_node("Unsqueeze", ["bias2", "ax1"], ["bias"]),
        helper.make_node("Add", ["scaled", "bias"], ["logit_att"]),
        helper.make_node("Softmax", ["logit_att"], ["att"], axis=-1),
        helper.make_node("MatMul", ["att", "v"], ["ctx"]),
        helper.make_node("Add", ["ctx", "e"], ["hidden"]),
        helper.make_node("Unsqueeze", ["m", "ax2"], ["m3"]),
        helper.make_node("Mul", ["hidden", "m3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "ax1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["m", "ax1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["count1"]),
        helper.make_node("Div", ["summed", "count1"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "wo"], ["logits"]),
    ]
    return _model(nodes, [V("input_ids", TensorProto.INT64, ["batch", "seq"]),
                          V("attention_mask", TensorProto.INT64, ["batch", "seq"])],
                  [V("logits", TensorProto.FLOAT, ["batch", 3]), V("hidden", TensorProto.FLOAT, ["batch", "seq", 8])],
                  [_w("emb", 50, 8), _w("wq", 8, 8), _w("wk", 8, 8), _w("wv", 8, 8), _w("wo", 8, 3),
                   _f32("inv_sqrt", [1 / math.sqrt(8)]), _f32("one", [1.0]), _f32("big", [10000.0]),
                   _i64("ax1", [1]), _i64("ax2", [2])])


# ----------------------------------------------------------------------------- requests per model
def stream_feed(n: int = 3) -> dict[str, np.ndarray]:
    return {"audio": RNG.standard_normal((n, 160)).astype(np.float32), "rate": np.array([16000], np.int64),
            "state": RNG.standard_normal((2, n, 16)).astype(np.float32)}


def gru_feed(n: int = 3) -> dict[str, np.ndarray]:
    return {"x": RNG.standard_normal((5, n, 8)).astype(np.float32), "h0": RNG.standard_normal((1, n, 16)).astype(np.float32)}


def detector_feed(n: int = 2) -> dict[str, np.ndarray]:
    return {"image": RNG.random((n, 3, 20, 28), dtype=np.float32)}


def labels_feed(n: int = 4) -> dict[str, np.ndarray]:
    return {"X": RNG.random((n, 4), dtype=np.float32)}


def uint32_feed(n: int = 3) -> dict[str, np.ndarray]:
    return {"ids": RNG.integers(0, 2**32 - 1, (n, 3), dtype=np.uint32)}


def control_feed(n: int = 3) -> dict[str, np.ndarray]:
    return {"x": RNG.standard_normal((n, 4)).astype(np.float32), "flag": np.array([True]),
            "steps": np.array([3], np.int64)}


def text_feed(n: int = 2, seq: int = 7) -> dict[str, np.ndarray]:
    mask = np.ones((n, seq), np.int64)
    mask[0, 4:] = 0
    return {"input_ids": RNG.integers(0, 50, (n, seq), dtype=np.int64), "attention_mask": mask}


# name: (task, builder, signature override, request feed, expected batch axis per input, batching)
ZOO = {
    "zoo-stream": ("zoo/stream", stream_model, None, stream_feed, {"audio": 0, "rate": None, "state": 1}, "alone"),
    "zoo-gru": ("zoo/gru", gru_model, {"dims": {"T": 6}}, gru_feed, {"x": 1, "h0": 1}, "alone"),
    "zoo-detector": ("zoo/detector", detector_model, "cli", detector_feed, {"image": 0}, "alone"),
    "zoo-labels": ("zoo/labels", None, None, labels_feed, {"X": 0}, "joined"),
    "zoo-uint32": ("zoo/uint32", uint32_model, None, uint32_feed, {"ids": 0}, "joined"),
    "zoo-control": ("zoo/control", control_model, None, control_feed, {"x": 0, "flag": None, "steps": None}, "alone"),
    "zoo-text": ("zoo/text", text_model, {"dims": {"seq": 12}}, text_feed, {"input_ids": 0, "attention_mask": 0},
                 "alone"),
}


@dataclass
class Zoo:
    proc: StackProcess
    client: Client
    http: httpx.Client
    triton: tc.InferenceServerClient
    paths: dict[str, str]
    status: dict[str, dict]
    refusals: dict[str, httpx.Response]

    def h(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.proc.api_key}"}

    def ort(self, path: str, feed: dict) -> dict[str, np.ndarray]:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))

    def built_file(self, variant_id: str) -> str:
        """The variant's built file in the stack's model store (named by its id)."""
        found = glob.glob(os.path.join(self.proc.data_dir, "models", "variants", "*", "*",
                                       variant_id.replace(":", "_") + ".onnx"))
        assert len(found) == 1, (variant_id, found)
        return found[0]


def _register_form(proc: StackProcess, path: str, name: str, task: str, signature=None) -> httpx.Response:
    data = {"name": name, "task": task, "accuracy": "0.9"}
    if signature is not None:
        data["signature"] = signature if isinstance(signature, str) else json.dumps(signature)
    with open(path, "rb") as f:
        return httpx.post(f"{proc.url}/v1/models", data=data, files={"file": (name + ".onnx", f.read())},
                          headers={"Authorization": f"Bearer {proc.api_key}"}, timeout=30.0)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("zoo-work")
    proc = StackProcess(workers=1, data_dir=str(tmp_path_factory.mktemp("zoo-data")), log_path=str(workdir / "stack.log"))
    proc.start(timeout_s=90.0)
    client = http = triton = None
    try:
        client = Client(proc.url, timeout_s=30.0, api_key=proc.api_key)
        http = httpx.Client(base_url=proc.url, timeout=30.0, headers={"Authorization": f"Bearer {proc.api_key}"})
        paths, refusals = {}, {}
        for name, (task, build, signature, *_rest) in ZOO.items():
            paths[name] = str(workdir / f"{name}.onnx")
            blob = label_classifier()[1] if build is None else build()
            with open(paths[name], "wb") as f:
                f.write(blob)
            if signature is None:
                client.register(paths[name], name=name, task=task, accuracy=0.9)
                continue
            # without the sizes the signature cannot be settled: refused at registration, naming the input
            refusals[name] = _register_form(proc, paths[name], name, task)
            if signature == "cli":
                env = {"INFAAS_URL": proc.url, "INFAAS_API_KEY": proc.api_key}
                old = {k: os.environ.get(k) for k in env}
                os.environ.update(env)
                try:
                    assert cli_main(["register", paths[name], "--name", name, "--task", task, "--accuracy", "0.9",
                                     "--dim", "H=32", "--dim", "W=32"]) == 0
                finally:
                    for k, v in old.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
            else:
                client.register(paths[name], name=name, task=task, accuracy=0.9, signature=signature)
        status = client.wait_ready(list(ZOO), timeout_s=READY_TIMEOUT_S)
        triton = tc.InferenceServerClient(url=f"127.0.0.1:{proc.port}", network_timeout=30.0)
        yield Zoo(proc, client, http, triton, paths, status, refusals)
        assert "unexpected error" not in open(proc.log_path, errors="replace").read(), proc.log_tail(80)
    finally:
        for c in (client, http, triton):
            if c is not None:
                c.close()
        proc.stop()


# ============================================================================ registration and signatures
@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_model_is_ready_and_no_variant_failed(zoo: Zoo, name: str):
    s = zoo.status[name]
    assert s["status"] == "ready", f"{name}: {s}\n{zoo.proc.log_tail(60)}"
    for v in s["variants"]:
        assert v["status"] in ("ready", "skipped"), v
        if v["status"] == "skipped":
            assert v["message"], v  # a skip always says why
    assert any(v["format"] == "fp32" and v["status"] == "ready" for v in s["variants"])


@pytest.mark.parametrize("name", list(ZOO))
def test_signature_is_shown_in_both_metadata(zoo: Zoo, name: str):
    expected_axes, batching = ZOO[name][4], ZOO[name][5]
    sig = zoo.client.model(name)["signature"]
    assert {i["name"]: i["batch_axis"] for i in sig["inputs"]} == expected_axes
    assert sig["batching"] == batching and sig["evidence"], sig
    meta = zoo.triton.get_model_metadata(name, headers=zoo.h())
    assert meta["parameters"]["signature"] == sig
    # variants of a model whose requests run alone are planned at batch 1
    for v in zoo.status[name]["variants"]:
        assert (v["max_batch"] == 1) == (batching == "alone"), v


def test_signature_evidence_names_what_it_was_inferred_from(zoo: Zoo):
    sig = zoo.client.model("zoo-stream")["signature"]
    assert any("'N'" in line and "named as a batch" in line for line in sig["evidence"]), sig
    assert any("'rate'" in line and "per-request" in line for line in sig["evidence"]), sig
    assert {o["name"]: o["batch_axis"] for o in sig["outputs"]} == {"out": 0, "state_out": 1}
    text = zoo.client.model("zoo-text")["signature"]
    assert text["inputs"][0]["sizes"] == [1, 12] and text["inputs"][0]["dynamic"] == [1]
    assert any("'seq'" in line and "given at registration" in line for line in text["evidence"]), text
    det = zoo.client.model("zoo-detector")["signature"]
    assert det["inputs"][0]["sizes"] == [1, 3, 32, 32] and det["inputs"][0]["dynamic"] == [2, 3]


@pytest.mark.parametrize("name,axis_name", [("zoo-gru", "T"), ("zoo-detector", "H"), ("zoo-text", "seq")])
def test_an_unsettled_signature_is_refused_at_registration_naming_the_input_and_the_fix(zoo: Zoo, name, axis_name):
    resp = zoo.refusals[name]
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["field"] == "signature"
    first = {"zoo-gru": "x", "zoo-detector": "image", "zoo-text": "input_ids"}[name]
    assert body["details"]["input"] == first
    assert f"'{first}'" in body["error"] and f"--dim {axis_name}=SIZE" in body["error"], body


def test_bad_signature_overrides_are_400s_naming_the_field(zoo: Zoo):
    path, task = zoo.paths["zoo-gru"], "zoo/gru2"
    cases = [
        ("{not json", "signature"),
        ({"dims": {"Q": 4}}, "signature.dims"),
        ({"dims": {"T": 0}}, "signature.dims.T"),
        ({"dims": {"T": True}}, "signature.dims.T"),
        ({"inputs": {"nope": {}}}, "signature.inputs.nope"),
        ({"inputs": {"x": {"batch_axis": 2}}}, "signature.inputs.x.batch_axis"),  # fixed at 8
        ({"inputs": {"x": {"sizes": {"2": 4}}}}, "signature.inputs.x.sizes"),
        ({"dims": {"T": 6}, "extra": 1}, "signature"),
    ]
    for sig, field in cases:
        resp = _register_form(zoo.proc, path, "zoo-gru-bad", task, sig)
        assert resp.status_code == 400 and resp.json()["field"] == field, (sig, resp.text)
    assert zoo.http.get("/v1/models/zoo-gru-bad").status_code == 404  # nothing was registered


def test_the_same_file_with_another_signature_is_a_409(zoo: Zoo):
    resp = _register_form(zoo.proc, zoo.paths["zoo-gru"], "zoo-gru", "zoo/gru", {"dims": {"T": 9}})
    assert resp.status_code == 409 and resp.json()["field"] == "signature", resp.text
    same = _register_form(zoo.proc, zoo.paths["zoo-gru"], "zoo-gru", "zoo/gru", {"dims": {"T": 6}})
    assert same.status_code == 200, same.text


# ============================================================================ outputs against onnxruntime
def _triton_infer(zoo: Zoo, name: str, feed: dict, binary: bool, version: str | None = None,
                  outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    inputs = []
    for k, a in feed.items():
        dt = "BYTES" if a.dtype == object else NP_TO_OIP[a.dtype]
        i = tc.InferInput(k, list(a.shape), dt)
        i.set_data_from_numpy(a, binary_data=binary)
        inputs.append(i)
    wanted = [tc.InferRequestedOutput(o, binary_data=binary) for o in outputs] if outputs else None
    result = zoo.triton.infer(name, inputs, model_version=version or "", outputs=wanted, headers=zoo.h())
    names = [o["name"] for o in result.get_response()["outputs"]]
    return {n: result.as_numpy(n) for n in names}


def _same(got: dict, want: dict, names=None) -> None:
    for n in names or want:
        g, w = got[n], want[n]
        if w.dtype == object:
            g = np.array([x.decode() if isinstance(x, bytes) else x for x in g.reshape(-1)], dtype=object).reshape(g.shape)
        assert g.shape == w.shape and g.dtype == w.dtype, (n, g.shape, w.shape, g.dtype, w.dtype)
        assert np.array_equal(g, w), (n, np.max(np.abs(g.astype(np.float64) - w)) if w.dtype.kind == "f" else (g, w))


def _feed(name: str) -> dict[str, np.ndarray]:
    feed = ZOO[name][3]()
    if name == "zoo-labels":
        feed = labels_feed()
    return feed


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_fp32_answers_exactly_as_onnxruntime_on_the_registered_file(zoo: Zoo, name: str, binary: bool):
    feed = _feed(name)
    want = zoo.ort(zoo.paths[name], feed)
    fp32 = next(v["id"] for v in zoo.status[name]["variants"] if v["format"] == "fp32" and v["status"] == "ready")
    _same(_triton_infer(zoo, name, feed, binary, version=fp32), want)
    # requested outputs: only the last one, by name
    last = list(want)[-1]
    got = _triton_infer(zoo, name, feed, binary, version=fp32, outputs=[last])
    assert list(got) == [last]
    _same(got, want, [last])


@pytest.mark.parametrize("name", list(ZOO))
def test_v1_infer_answers_exactly_as_onnxruntime(zoo: Zoo, name: str):
    feed = _feed(name)
    want = zoo.ort(zoo.paths[name], feed)
    fp32 = next(v["id"] for v in zoo.status[name]["variants"] if v["format"] == "fp32" and v["status"] == "ready")
    tensors = [{"name": k, "shape": list(a.shape), "datatype": "BYTES" if a.dtype == object else NP_TO_OIP[a.dtype],
                "data": a.reshape(-1).tolist()} for k, a in feed.items()]
    resp = zoo.http.post("/v1/infer", json={"variant": fp32, "inputs": tensors})
    assert resp.status_code == 200, resp.text
    got = {o["name"]: o for o in resp.json()["outputs"]}
    for n, w in want.items():
        g = np.array(got[n]["data"], dtype=w.dtype).reshape(got[n]["shape"])
        assert g.shape == w.shape and np.array_equal(g, w), n
    # by architecture, with no objective: whichever variant answers, the decision says it and batch
    resp = zoo.http.post("/v1/infer", json={"architecture": name, "inputs": tensors})
    assert resp.status_code == 200, resp.text
    assert resp.json()["decision"]["variant"].startswith(name + ":")


@pytest.mark.parametrize("name", list(ZOO))
def test_other_variants_answer_as_their_built_file_and_within_their_agreement(zoo: Zoo, name: str):
    others = [v for v in zoo.status[name]["variants"] if v["format"] != "fp32" and v["status"] == "ready"]
    for v in others:
        feed = _feed(name)
        got = _triton_infer(zoo, name, feed, True, version=v["id"])
        _same(got, zoo.ort(zoo.built_file(v["id"]), feed))
        assert v["agreement"] is not None and 0.0 <= v["agreement"] <= 1.0, v
        value, _ = agreement(zoo.ort(zoo.paths[name], feed), got)
        # a few rows here against the build's 256: allow one row's worth below the measured figure
        assert value >= v["agreement"] - 1.0 / len(next(iter(got.values()))) - 1e-9, (v["id"], value, v["agreement"])


def test_a_per_request_value_changes_the_answer_and_rows_follow_the_batch_axis(zoo: Zoo):
    feed = stream_feed(4)
    a = _triton_infer(zoo, "zoo-stream", feed, True)
    feed2 = dict(feed, rate=np.array([8000], np.int64))
    b = _triton_infer(zoo, "zoo-stream", feed2, True)
    assert a["state_out"].shape == (2, 4, 16) and not np.allclose(a["out"], b["out"])
    # a state whose batch (axis 1) disagrees with the audio's rows is a 400 naming the input
    bad = dict(feed, state=feed["state"][:, :3])
    resp = zoo.http.post("/v2/models/zoo-stream/infer", json={"inputs": [
        {"name": k, "shape": list(v.shape), "datatype": NP_TO_OIP[v.dtype], "data": v.reshape(-1).tolist()}
        for k, v in bad.items()]})
    assert resp.status_code == 400 and "'state'" in resp.json()["error"], resp.text


def test_a_dimension_name_takes_one_size_across_inputs(zoo: Zoo):
    feed = text_feed(2, 7)
    feed["attention_mask"] = feed["attention_mask"][:, :5]
    resp = zoo.http.post("/v2/models/zoo-text/infer", json={"inputs": [
        {"name": k, "shape": list(v.shape), "datatype": "INT64", "data": v.reshape(-1).tolist()}
        for k, v in feed.items()]})
    assert resp.status_code == 400 and "'seq'" in resp.json()["error"], resp.text


# ============================================================================ a failed build's reason
def test_a_query_on_a_model_whose_build_failed_answers_with_the_reason(zoo: Zoo, tmp_path):
    """A model whose every variant fails (a Reshape to a fixed size that only some inputs fit, here
    none of the representative ones): the 404 of a query names each variant and why."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    blob = _model(nodes, [V("x", TensorProto.FLOAT, ["N", 5])], [V("y", TensorProto.FLOAT, ["N", 3])],
                  [_i64("shape", [-1, 3])])
    path = tmp_path / "broken.onnx"
    path.write_bytes(blob)
    zoo.client.register(str(path), name="zoo-broken", task="zoo/broken", accuracy=0.9)
    final = zoo.client.wait_ready(["zoo-broken"], timeout_s=READY_TIMEOUT_S)["zoo-broken"]
    assert final["status"] == "failed", final
    failed = [v for v in final["variants"] if v["status"] == "failed"]
    assert failed and all(v["message"] for v in failed), final
    for resp in (zoo.http.post("/v1/infer", json={"architecture": "zoo-broken", "inputs": [[0.0] * 5]}),
                 zoo.http.post("/v2/models/zoo-broken/infer", json={"inputs": [
                     {"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [0.0] * 5}]}),
                 zoo.http.get("/v2/models/zoo-broken")):
        assert resp.status_code == 404, resp.text
        body = resp.json()
        assert failed[0]["id"] in body["error"] and failed[0]["message"][:40] in body["error"], body
        assert body["details"]["variants"][failed[0]["id"]]["status"] == "failed"
    # another tenant learns nothing of it
    other = zoo.proc.create_key("someone-else", ("query",))
    resp = zoo.http.post("/v1/infer", json={"architecture": "zoo-broken", "inputs": [[0.0] * 5]},
                         headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 404 and "failed" not in resp.text, resp.text
