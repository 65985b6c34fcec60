"""Serving, end to end: what the HTTP API answers equals what scikit-learn
predicts, on every request path, under concurrency, and the catalogue,
health and registration routes say what they should.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from stack_support import ARCHITECTURES, Stack

from infaas.cli import digits

pytestmark = pytest.mark.e2e

CHUNK = 128  # rows per multi-row request: the 360-row test split in three requests
SINGLE_ROWS = (0, 1, 7, 100, 359)


def fp32_variant(architecture: str) -> str:
    return f"{architecture}:onnx-fp32:cpu:b32"


def outputs_by_name(outputs: list[dict]) -> dict[str, dict]:
    return {o["name"]: o for o in outputs}


def assert_labels(stack: Stack, architecture: str, x: np.ndarray, labels, decision: dict) -> None:
    """Labels equal scikit-learn's. An int8 variant (chosen when the service
    finds it cheaper) may round a borderline row differently: it is held to
    at most 1% disagreement; the fp32 variants must agree on every row."""
    expected = stack.expected(architecture, x)
    got = np.asarray(labels).reshape(-1)
    assert got.shape == expected.shape
    assert decision["variant"].startswith(architecture + ":"), decision
    if ":onnx-int8:" in decision["variant"]:
        assert (got != expected).mean() <= 0.01, (decision, got, expected)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=str(decision))


def assert_probabilities(stack: Stack, architecture: str, x: np.ndarray, probabilities: np.ndarray, decision: dict) -> None:
    if ":onnx-fp32:" not in decision["variant"]:
        return
    expected = stack.models[architecture].predict_proba(x)
    np.testing.assert_allclose(np.asarray(probabilities).reshape(expected.shape), expected, atol=1e-4)


def chunks(x: np.ndarray, size: int = CHUNK):
    for i in range(0, len(x), size):
        yield i, x[i : i + size]


# ----------------------------------------------------------------- binary OIP
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_binary_oip_whole_test_split_matches_sklearn(stack: Stack, architecture: str):
    x = stack.data.x_test
    for _, part in chunks(x):
        outputs, decision = stack.client.infer(part, architecture=architecture)
        assert outputs["label"].dtype == np.int64
        assert_labels(stack, architecture, part, outputs["label"], decision)
        assert_probabilities(stack, architecture, part, outputs["probabilities"], decision)
    for i in SINGLE_ROWS:
        outputs, decision = stack.client.infer(x[i : i + 1], architecture=architecture)
        assert outputs["label"].shape == (1,)
        assert_labels(stack, architecture, x[i : i + 1], outputs["label"], decision)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_binary_oip_fp32_variant_equals_sklearn_exactly(stack: Stack, architecture: str):
    x = stack.data.x_test
    got = []
    for _, part in chunks(x):
        outputs, decision = stack.client.infer(part, variant=fp32_variant(architecture))
        assert decision["variant"] == fp32_variant(architecture)
        assert_probabilities(stack, architecture, part, outputs["probabilities"], decision)
        got.append(outputs["label"])
    np.testing.assert_array_equal(np.concatenate(got), stack.expected(architecture, x))


# ----------------------------------------------------------------- plain JSON
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_plain_json_v1_infer_matches_sklearn(stack: Stack, architecture: str):
    x = stack.data.x_test
    for _, part in chunks(x):
        resp = stack.http.post("/v1/infer", json={"architecture": architecture, "inputs": part.tolist()})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        out = outputs_by_name(body["outputs"])
        assert out["label"]["shape"] == [len(part)]
        assert out["label"]["datatype"] == "INT64"
        assert out["probabilities"]["shape"] == [len(part), 10]
        assert_labels(stack, architecture, part, out["label"]["data"], body["decision"])
        assert_probabilities(stack, architecture, part, np.asarray(out["probabilities"]["data"]), body["decision"])
        assert body["latency_ms"] >= 0
    for i in SINGLE_ROWS:
        resp = stack.http.post("/v1/infer", json={"architecture": architecture, "inputs": x[i : i + 1].tolist()})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert_labels(stack, architecture, x[i : i + 1], outputs_by_name(body["outputs"])["label"]["data"], body["decision"])


def test_plain_json_v1_infer_with_named_tensor(stack: Stack):
    """``inputs`` may also be a list of OIP tensors."""
    x = stack.data.x_test[:5]
    tensor = {"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    resp = stack.http.post("/v1/infer", json={"variant": fp32_variant("mlp-32"), "inputs": [tensor]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    np.testing.assert_array_equal(outputs_by_name(body["outputs"])["label"]["data"], stack.expected("mlp-32", x))


# ----------------------------------------------------------------- OIP JSON
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_oip_json_infer_matches_sklearn(stack: Stack, architecture: str):
    x = stack.data.x_test
    for start, part in chunks(x):
        req = {
            "id": f"req-{start}",
            "inputs": [{"name": "X", "shape": list(part.shape), "datatype": "FP32", "data": part.ravel().tolist()}],
        }
        resp = stack.http.post(f"/v2/models/{architecture}/infer", json=req)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["model_name"] == architecture
        assert body["id"] == f"req-{start}"
        decision = body["parameters"]["decision"]
        assert body["model_version"] == decision["variant"]
        out = outputs_by_name(body["outputs"])
        assert_labels(stack, architecture, part, out["label"]["data"], decision)
        assert_probabilities(stack, architecture, part, np.asarray(out["probabilities"]["data"]), decision)
    for i in SINGLE_ROWS:
        req = {"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": x[i].tolist()}]}
        resp = stack.http.post(f"/v2/models/{architecture}/infer", json=req)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        label = outputs_by_name(body["outputs"])["label"]["data"]
        assert_labels(stack, architecture, x[i : i + 1], label, body["parameters"]["decision"])


def test_oip_json_by_task_and_by_variant_in_the_path(stack: Stack):
    x = stack.data.x_test[10:20]
    tensor = {"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    resp = stack.http.post(f"/v2/models/{digits.TASK}/infer", json={"inputs": [tensor]})
    assert resp.status_code == 200, resp.text
    decision = resp.json()["parameters"]["decision"]
    arch = decision["variant"].split(":", 1)[0]
    assert arch in ARCHITECTURES
    assert_labels(stack, arch, x, outputs_by_name(resp.json()["outputs"])["label"]["data"], decision)

    variant = fp32_variant("logistic-regression")
    resp = stack.http.post(f"/v2/models/{variant}/infer", json={"inputs": [tensor]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["model_version"] == variant
    np.testing.assert_array_equal(outputs_by_name(resp.json()["outputs"])["label"]["data"],
                                  stack.expected("logistic-regression", x))


# ----------------------------------------------------------------- objectives
def test_task_query_with_min_accuracy_picks_an_accurate_variant(stack: Stack):
    ready = [v for s in stack.status.values() for v in s["variants"] if v["status"] == "ready"]
    floor = max(v["accuracy"] for v in ready)  # only the most accurate variant(s) qualify
    x = stack.data.x_test[:40]
    resp = stack.http.post("/v1/infer", json={"task": digits.TASK, "objective": {"min_accuracy": floor},
                                              "inputs": x.tolist()})
    assert resp.status_code == 200, resp.text
    decision = resp.json()["decision"]
    for key in ("variant", "worker", "reason", "predicted_latency_ms"):
        assert key in decision, decision
    assert decision["worker"].startswith("cpu-")
    assert isinstance(decision["predicted_latency_ms"], (int, float)) and decision["predicted_latency_ms"] > 0
    assert decision["reason"] and "accuracy" in decision["reason"]
    by_id = {v["id"]: v for v in ready}
    assert decision["variant"] in by_id
    assert by_id[decision["variant"]]["accuracy"] >= floor
    assert decision["accuracy"] >= floor
    arch = decision["variant"].split(":", 1)[0]
    assert_labels(stack, arch, x, outputs_by_name(resp.json()["outputs"])["label"]["data"], decision)

    # the same through the binary path, with a latency objective too
    outputs, decision = stack.client.infer(x, task=digits.TASK, min_accuracy=floor, latency_ms=5000.0)
    assert by_id[decision["variant"]]["accuracy"] >= floor
    assert decision["predicted_latency_ms"] <= 5000.0
    assert_labels(stack, decision["variant"].split(":", 1)[0], x, outputs["label"], decision)


# ----------------------------------------------------------------- catalogue
def test_models_list_both_ready_with_measured_accuracy(stack: Stack):
    resp = stack.http.get("/v1/models")
    assert resp.status_code == 200
    models = {m["name"]: m for m in resp.json()["models"]}
    assert set(ARCHITECTURES) <= set(models)
    for name in ARCHITECTURES:
        assert models[name]["status"] == "ready"
        assert models[name]["task"] == digits.TASK
        assert models[name]["inputs"] == [{"name": "X", "dtype": "float32", "shape": [-1, 64]}]

    resp = stack.http.get("/v1/models", params={"task": digits.TASK})
    assert {m["name"] for m in resp.json()["models"]} >= set(ARCHITECTURES)

    val_acc = {name: float((m.predict(stack.data.x_val) == stack.data.y_val).mean()) for name, m in stack.models.items()}
    for name in ARCHITECTURES:
        resp = stack.http.get(f"/v1/models/{name}")
        assert resp.status_code == 200
        body = resp.json()
        assert body["status"] == "ready"
        ready = [v for v in body["variants"] if v["status"] == "ready"]
        assert any(v["format"] == "fp32" for v in ready)
        for v in body["variants"]:
            assert v["status"] in ("ready", "skipped"), v
            if v["status"] == "skipped":
                assert v["message"]
                continue
            assert v["accuracy_measured"] is True
            assert 0.0 <= v["accuracy"] <= 1.0
            assert v["profile"]["latency_ms"]["1"][1] > 0
            if v["format"] == "fp32":  # same graph as scikit-learn: same validation accuracy
                assert v["accuracy"] == pytest.approx(val_acc[name], abs=1e-9)
            else:
                assert abs(v["accuracy"] - val_acc[name]) <= 0.02

    resp = stack.http.get("/v1/tasks")
    assert resp.status_code == 200
    tasks = {t["task"]: t for t in resp.json()["tasks"]}
    assert set(tasks[digits.TASK]["architectures"]) >= set(ARCHITECTURES)

    resp = stack.http.get("/v1/workers")
    assert resp.status_code == 200
    assert len(resp.json()["workers"]) == 2


# ----------------------------------------------------------------- OIP health and metadata
def test_oip_health_and_metadata(stack: Stack):
    assert stack.http.get("/v2/health/live").json() == {"live": True}
    resp = stack.http.get("/v2/health/ready")
    assert resp.status_code == 200 and resp.json()["ready"] is True and resp.json()["workers"] == 2
    resp = stack.http.get("/v2")
    assert resp.status_code == 200 and "binary_tensor_data" in resp.json()["extensions"]

    for name in ARCHITECTURES:
        resp = stack.http.get(f"/v2/models/{name}")
        assert resp.status_code == 200, resp.text
        meta = resp.json()
        assert meta["name"] == name
        assert meta["platform"] == "onnxruntime"
        assert fp32_variant(name) in meta["versions"]
        assert all(v.startswith(name + ":") for v in meta["versions"])
        assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 64]}]
        outputs = {o["name"]: o for o in meta["outputs"]}
        assert outputs["label"]["datatype"] == "INT64"
        assert outputs["probabilities"]["shape"] == [-1, 10]
        resp = stack.http.get(f"/v2/models/{name}/ready")
        assert resp.status_code == 200 and resp.json()["ready"] is True

    resp = stack.http.get(f"/v2/models/{digits.TASK}")
    assert resp.status_code == 200, resp.text
    assert {v.split(":", 1)[0] for v in resp.json()["versions"]} == set(ARCHITECTURES)


def test_docs_and_openapi(stack: Stack):
    resp = stack.http.get("/docs")
    assert resp.status_code == 200 and "text/html" in resp.headers["content-type"]
    resp = stack.http.get("/openapi.json")
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    for p in ("/v1/models", "/v1/infer", "/v2/models/{name}/infer"):
        assert p in paths, sorted(paths)


# ----------------------------------------------------------------- registration
def _register(stack: Stack, path: str, name: str, accuracy: float = 0.9) -> httpx.Response:
    with open(path, "rb") as f:
        files = {"file": (name + ".onnx", f.read(), "application/octet-stream")}
    data = {"name": name, "task": digits.TASK, "accuracy": str(accuracy)}
    return stack.http.post("/v1/models", data=data, files=files)


def test_register_same_file_again_is_idempotent(stack: Stack):
    name = "logistic-regression"
    before = stack.http.get(f"/v1/models/{name}").json()
    resp = _register(stack, stack.paths[name], name, before["declared_accuracy"])  # as registered the first time
    assert resp.status_code == 200, resp.text  # existing, not created
    body = resp.json()
    assert body["name"] == name and body["sha256"] == before["sha256"]
    after = stack.http.get(f"/v1/models/{name}").json()
    # no new build: the same variants, still ready, profiles untouched
    assert [(v["id"], v["status"]) for v in after["variants"]] == [(v["id"], v["status"]) for v in before["variants"]]
    assert [v.get("profile") for v in after["variants"]] == [v.get("profile") for v in before["variants"]]
    assert after["status"] == "ready"


def test_register_different_file_under_existing_name_conflicts(stack: Stack):
    resp = _register(stack, stack.paths["mlp-32"], "logistic-regression")
    assert resp.status_code == 409, resp.text
    body = resp.json()
    assert body["code"] == "conflict" and body["field"] == "name" and body["message"]
    # the existing model is untouched
    status = stack.http.get("/v1/models/logistic-regression").json()
    assert status["sha256"] == stack.status["logistic-regression"]["sha256"]
    stack.assert_serving()


# ----------------------------------------------------------------- concurrency
N_CONCURRENT = 64


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_concurrent_single_row_requests_each_get_their_own_answer(stack: Stack, architecture: str):
    """64 single-row requests in flight at once: the worker coalesces them into
    batches, and each caller must still get the answer for its own row."""
    x = stack.data.x_test[:N_CONCURRENT]
    expected = stack.expected(architecture, x)
    variant = fp32_variant(architecture)  # exact agreement with sklearn on every row

    async def fire() -> list[tuple[int, int, str]]:
        limits = httpx.Limits(max_connections=N_CONCURRENT, max_keepalive_connections=N_CONCURRENT)
        async with httpx.AsyncClient(base_url=stack.url, timeout=30.0, limits=limits, headers=stack.http.headers) as client:
            start = asyncio.Event()

            async def one(i: int):
                await start.wait()
                resp = await client.post("/v1/infer", json={"variant": variant, "inputs": [x[i].tolist()]})
                assert resp.status_code == 200, resp.text
                body = resp.json()
                return i, outputs_by_name(body["outputs"])["label"]["data"][0], body["decision"]["variant"]

            tasks = [asyncio.create_task(one(i)) for i in range(N_CONCURRENT)]
            await asyncio.sleep(0)
            start.set()
            return await asyncio.gather(*tasks)

    results = asyncio.run(fire())
    assert len(results) == N_CONCURRENT
    for i, label, used in results:
        assert used == variant
        assert label == expected[i], f"row {i}: got {label}, sklearn says {expected[i]}"

    # the same through the binary path from threads, with distinct row counts
    # per caller so that a mix-up of rows between callers cannot go unseen
    def call(i: int):
        rows = x[i : i + 1 + i % 3]
        outputs, decision = stack.client.infer(rows, architecture=architecture)
        return i, rows, outputs, decision

    with ThreadPoolExecutor(max_workers=16) as pool:
        for i, rows, outputs, decision in pool.map(call, range(N_CONCURRENT)):
            assert outputs["label"].shape == (len(rows),)
            assert_labels(stack, architecture, rows, outputs["label"], decision)


def test_worker_stats_show_served_replicas(stack: Stack):
    """After the queries above, workers report loaded replicas of both architectures."""
    workers = stack.http.get("/v1/workers").json()["workers"]
    loaded = {r["variant_id"].split(":", 1)[0] for w in workers for r in w["replicas"]}
    assert set(ARCHITECTURES) <= loaded, json.dumps(workers)[:2000]


def test_zz_no_internal_errors_logged(stack: Stack):
    stack.assert_no_internal_errors()


def test_every_inference_answer_carries_a_request_id(stack: Stack):
    x = stack.data.x_test[:1].tolist()
    given = stack.http.post("/v1/infer", json={"architecture": ARCHITECTURES[0], "inputs": x},
                            headers={"x-request-id": "trace-42.a_b"})
    assert given.status_code == 200 and given.headers["x-request-id"] == "trace-42.a_b"
    made = [stack.http.post("/v1/infer", json={"architecture": ARCHITECTURES[0], "inputs": x}) for _ in range(2)]
    ids = [r.headers["x-request-id"] for r in made]
    assert all(len(i) == 32 for i in ids) and ids[0] != ids[1]  # one per request when the caller sends none
    # an id that is not safe to log or echo is replaced, and errors carry one too
    bad = stack.http.post("/v2/models/no-such-model/infer", content=b"{}", headers={"x-request-id": "a b\"c"})
    assert bad.status_code in (400, 404) and bad.headers["x-request-id"] != 'a b"c'
    assert len(bad.headers["x-request-id"]) == 32
