"""The serverless tier's inference function (``functions/inference``) as Lambda runs it, on moto's S3.

The function runs in the Lambda fidelity harness's execution environment (``lambda_harness.
LambdaFunction``: a process of its own started with ``-I -S -B``, only the function's folder, a
layer and the runtime's boto3 on its path, frozen between invocations). The function's folder is
staged as the stack stages every function (its handler and the ``infaas`` package); its layer is
onnxruntime and numpy, linked from this environment (the stack's layer for this function holds
the same two packages, built for Lambda's platform). The model is a real digits classifier,
uploaded to the model bucket; each answer is checked against onnxruntime run here on the same file.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from aws_support import MODEL_KEY as KEY
from aws_support import OTHER_MODEL_KEY as OTHER
from lambda_harness import RUNTIME_PACKAGES, LambdaAssets, LambdaFunction

from infaas.cli import digits
from infaas.core import tier

ROOT = Path(__file__).resolve().parents[2]
LAYER_PACKAGES = ("numpy", "numpy.libs", "onnxruntime")


def _link(folder: Path, site: Path, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (site / name).exists():
            (folder / name).symlink_to(site / name)
    return folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> LambdaAssets:
    work = tmp_path_factory.mktemp("inference-function")
    task = work / "functions" / "inference"  # as cdk/infaas_cdk/artifacts.stage_function stages it
    shutil.copytree(ROOT / "functions" / "inference", task, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "src" / "infaas", task / "infaas", ignore=shutil.ignore_patterns("__pycache__"))
    import boto3

    site = Path(np.__file__).resolve().parents[1]
    layer = _link(work / "layer" / "python", site, LAYER_PACKAGES)
    runtime = _link(work / "runtime", Path(boto3.__file__).resolve().parents[1], RUNTIME_PACKAGES)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return LambdaAssets(sys.executable, version, layer, runtime, {"inference": task}, False, 0.0)


def function(assets, deployment, tmp_path, **env) -> LambdaFunction:
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
             "AWS_ENDPOINT_URL", "INFAAS_BUCKET")
    base = {k: deployment.env[k] for k in names}
    cache = tmp_path / f"tmp-{len(os.listdir(tmp_path))}"
    return LambdaFunction("inference", assets, {**base, "INFAAS_MODEL_CACHE_DIR": str(cache), **env},
                          tmp_path / "inference.log", memory_mb=1024, timeout_s=60.0)


def expected(path: str, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"X": x})))


def oip(x: np.ndarray) -> list[dict]:
    return [{"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]


@pytest.fixture
def rows() -> np.ndarray:
    return digits.split().x_val[:5].astype(np.float32)


def test_first_invocation_is_cold_then_warm(assets, deployment, model_files, rows, tmp_path):
    fn = function(assets, deployment, tmp_path)
    try:
        want = expected(model_files[KEY], rows)
        first = fn.invoke({"variant_id": "lr:ort-fp32:lambda:b8", "model_key": KEY, "inputs": oip(rows), "id": "q1"})
        assert first.error is None and first.cold, fn.logs()
        a = first.result
        assert "error" not in a, a
        assert a["cold"] is True and a["environment_cold"] is True
        assert a["download_ms"] > 0 and a["load_ms"] > 0 and a["module_init_ms"] > 0
        assert a["init_ms"] == pytest.approx(a["module_init_ms"] + a["download_ms"] + a["load_ms"], abs=0.01)
        assert a["rows"] == 5 and a["id"] == "q1" and a["memory_mb"] == 1024 and a["threads"] == 1
        got = {t["name"]: np.asarray(t["data"]).reshape(t["shape"]) for t in a["outputs"]}
        assert got["label"].tolist() == want["label"].tolist()
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5)

        second = fn.invoke({"variant_id": "lr:ort-fp32:lambda:b8", "model_key": KEY, "inputs": oip(rows)})
        b = second.result
        assert not second.cold and b["cold"] is False and b["environment_cold"] is False
        assert b["init_ms"] == 0.0 and b["download_ms"] == 0.0 and b["load_ms"] == 0.0 and b["run_ms"] > 0
        assert [t["data"] for t in b["outputs"]] == [t["data"] for t in a["outputs"]]
        print(f"\ncold: init {a['init_ms']:.1f} ms (imports {a['module_init_ms']:.1f}, download {a['download_ms']:.1f}, "
              f"load {a['load_ms']:.1f}), run {a['run_ms']:.3f} ms; warm: run {b['run_ms']:.3f} ms; "
              f"harness init {first.init_s * 1000:.1f} ms")
        assert len(fn.cold_starts) == 1  # one execution environment served both
    finally:
        fn.kill()
    again = function(assets, deployment, tmp_path)  # a new environment: cold again, however warm the last was
    try:
        c = again.invoke({"variant_id": "lr:ort-fp32:lambda:b8", "model_key": KEY, "inputs": oip(rows)}).result
        assert c["cold"] is True and c["environment_cold"] is True
    finally:
        again.kill()


def test_npz_in_npz_out_and_named_outputs(assets, deployment, model_files, rows, tmp_path):
    fn = function(assets, deployment, tmp_path)
    try:
        buf = io.BytesIO()
        np.savez(buf, X=rows.astype(np.float64))  # cast to the model's float32 by the function
        a = fn.invoke({"variant_id": "v", "model_key": KEY, "inputs": base64.b64encode(buf.getvalue()).decode(),
                       "outputs": ["label"]}).result
        assert "error" not in a, a
        with np.load(io.BytesIO(base64.b64decode(a["outputs"]))) as z:
            assert z.files == ["label"]
            assert z["label"].tolist() == expected(model_files[KEY], rows)["label"].tolist()
    finally:
        fn.kill()


def test_refusals_are_answers_with_a_status(assets, deployment, model_files, rows, tmp_path):
    fn = function(assets, deployment, tmp_path)
    try:
        big = np.full((tier.MAX_PAYLOAD_BYTES // (64 * 4), 64), 0.5, np.float32)  # "0.5, " each: 7.9 MB of JSON
        r = fn.invoke({"variant_id": "v", "model_key": KEY, "inputs": oip(big)})
        assert r.error is None and r.result["status"] == 413
        assert r.result["error"]["code"] == "payload_too_large" and "6 MB" in r.result["error"]["message"]
        missing = fn.invoke({"variant_id": "v", "model_key": "variants/none.onnx", "inputs": oip(rows)}).result
        assert missing["status"] == 404 and missing["error"]["code"] == "not_found"
        wrong = fn.invoke({"variant_id": "v", "model_key": KEY, "inputs": [
            {"name": "Y", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}).result
        assert wrong["status"] == 400 and "missing ['X']" in wrong["error"]["message"]
        assert fn.invoke({"model_key": KEY, "inputs": oip(rows)}).result["status"] == 400
        # the environment survived every refusal: the model is still loaded
        warm = fn.invoke({"variant_id": "v", "model_key": KEY, "inputs": oip(rows)}).result
        assert warm["cold"] is False and len(fn.cold_starts) == 1
    finally:
        fn.kill()


def test_models_are_cached_least_recently_used_first_within_the_bounds(assets, deployment, model_files, rows, tmp_path):
    fn = function(assets, deployment, tmp_path, INFAAS_FUNCTION_MAX_MODELS="1")
    cache = Path(fn.env["INFAAS_MODEL_CACHE_DIR"])
    try:
        def call(key: str) -> dict:
            answer = fn.invoke({"variant_id": "v", "model_key": key, "inputs": oip(rows)}).result
            assert "error" not in answer, answer
            return answer

        assert call(KEY)["cold"] and not call(KEY)["cold"]
        assert call(OTHER)["cold"]  # the second model takes the only place
        assert sorted(os.listdir(cache)) == [OTHER.replace("/", "_")]
        assert call(KEY)["cold"]  # the first was dropped, file and session
        assert sorted(os.listdir(cache)) == [KEY.replace("/", "_")]
    finally:
        fn.kill()
    small = function(assets, deployment, tmp_path, INFAAS_FUNCTION_CACHE_BYTES="1000")
    try:  # a model bigger than the /tmp budget is refused, clearly
        r = small.invoke({"variant_id": "v", "model_key": KEY, "inputs": oip(rows)}).result
        assert r["status"] == 413 and "/tmp budget" in r["error"]["message"]
    finally:
        small.kill()
    assert json.dumps(r)  # an answer Lambda can serialise
