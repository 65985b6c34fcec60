"""The inference function's handler in this process, on moto's S3 (the session's deployment): every
path of the code measured, beside ``test_inference_function.py`` which runs the same handler in the
Lambda fidelity harness. A real digits model; answers checked against onnxruntime run here."""

from __future__ import annotations

import base64
import io

import numpy as np
import onnxruntime as ort
import pytest
from aws_support import MODEL_KEY as KEY
from aws_support import OTHER_MODEL_KEY as OTHER
from aws_support import load_function

from infaas.cli import digits
from infaas.core import tier


def handler(monkeypatch, tmp_path, **env):
    monkeypatch.setenv("INFAAS_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return load_function("inference")


def oip(x: np.ndarray) -> list[dict]:
    return [{"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]


@pytest.fixture
def rows() -> np.ndarray:
    return digits.split().x_val[:4].astype(np.float32)


def test_cold_then_warm_json_and_npz_named_outputs(deployment, model_files, rows, monkeypatch, tmp_path):
    fn = handler(monkeypatch, tmp_path)
    session = ort.InferenceSession(model_files[KEY], providers=["CPUExecutionProvider"])
    want = session.run(None, {"X": rows})[0]
    a = fn.handler({"variant_id": "v", "model_key": KEY, "inputs": oip(rows), "id": "q"})
    assert "error" not in a, a
    assert a["cold"] and a["environment_cold"] and a["rows"] == 4 and a["id"] == "q"
    got = {t["name"]: np.asarray(t["data"]).reshape(t["shape"]) for t in a["outputs"]}
    assert got["label"].tolist() == want.tolist()
    b = fn.handler({"variant_id": "v", "model_key": KEY, "inputs": oip(rows)})
    assert b["cold"] is False and b["environment_cold"] is False and b["download_ms"] == 0.0
    buf = io.BytesIO()
    np.savez(buf, X=rows.astype(np.float64))
    c = fn.handler({"variant_id": "v", "model_key": KEY, "inputs": base64.b64encode(buf.getvalue()).decode(),
                    "outputs": ["label"]})
    with np.load(io.BytesIO(base64.b64decode(c["outputs"]))) as z:
        assert z.files == ["label"] and z["label"].tolist() == want.tolist()


def test_refusals_name_the_field_and_the_environment_survives(deployment, model_files, rows, monkeypatch, tmp_path):
    fn = handler(monkeypatch, tmp_path)
    cases = [
        ({"variant_id": "v", "model_key": KEY, "inputs": [{"name": "Y", "shape": [1, 64], "datatype": "FP32",
                                                            "data": [0.0] * 64}]}, 400),
        ({"variant_id": "v", "model_key": KEY, "inputs": "not base64 npz!"}, 400),
        ({"variant_id": "v", "model_key": KEY, "inputs": oip(rows), "outputs": ["nope"]}, 400),
        ({"variant_id": "v", "model_key": "variants/none.onnx", "inputs": oip(rows)}, 404),
        ({"variant_id": "v", "model_key": KEY, "inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32",
                                                            "data": [0.0] * 3}]}, 400),
        ("not an object", 400),
    ]
    for event, status in cases:
        out = fn.handler(event)
        assert out.get("status") == status, (event if isinstance(event, str) else event.get("inputs"), out)
        assert out["error"]["code"] and out["error"]["message"]
    big = np.full((tier.MAX_PAYLOAD_BYTES // (64 * 4), 64), 0.5, np.float32)
    assert fn.handler({"variant_id": "v", "model_key": KEY, "inputs": oip(big)})["status"] == 413
    assert "error" not in fn.handler({"variant_id": "v", "model_key": KEY, "inputs": oip(rows)})


def test_models_are_cached_least_recently_used_first_within_the_bounds(deployment, model_files, rows, monkeypatch,
                                                                       tmp_path):
    fn = handler(monkeypatch, tmp_path, INFAAS_FUNCTION_MAX_MODELS="1")
    call = lambda key: fn.handler({"variant_id": "v", "model_key": key, "inputs": oip(rows)})  # noqa: E731
    assert call(KEY)["cold"] and not call(KEY)["cold"]
    assert call(OTHER)["cold"]  # the second model takes the only place
    assert call(KEY)["cold"]  # the first was dropped
    small = handler(monkeypatch, tmp_path / "small", INFAAS_FUNCTION_CACHE_BYTES="1000")
    r = small.handler({"variant_id": "v", "model_key": KEY, "inputs": oip(rows)})
    assert r["status"] == 413 and "/tmp budget" in r["error"]["message"]
