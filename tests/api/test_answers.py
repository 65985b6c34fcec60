"""Every answer, in every protocol, says how it went: the decision (with its end-to-end prediction),
``latency_ms`` measured in the service and ``objective_met`` against the query's latency objective
(null without one)."""

from __future__ import annotations

import time

import pytest
from stack_support import ARCHITECTURES, Stack

ARCH = ARCHITECTURES[0]


def plain(stack: Stack, objective: dict | None) -> dict:
    doc = {"architecture": ARCH, "inputs": stack.data.x_test[:2].tolist(), **({"objective": objective} if objective else {})}
    resp = stack.http.post("/v1/infer", json=doc)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return {"latency_ms": body["latency_ms"], "objective_met": body["objective_met"], **body["decision"]}


def oip_json(stack: Stack, objective: dict | None) -> dict:
    doc = {"inputs": [{"name": "X", "shape": [2, 64], "datatype": "FP32",
                       "data": stack.data.x_test[:2].reshape(-1).tolist()}], "parameters": objective or {}}
    resp = stack.http.post(f"/v2/models/{ARCH}/infer", json=doc)
    assert resp.status_code == 200, resp.text
    params = resp.json()["parameters"]
    return {"latency_ms": params["latency_ms"], "objective_met": params["objective_met"], **params["decision"]}


def oip_binary(stack: Stack, objective: dict | None) -> dict:
    _, decision = stack.client.infer(stack.data.x_test[:2].astype("float32"), architecture=ARCH, **(objective or {}))
    return decision


@pytest.mark.parametrize("send", [plain, oip_json, oip_binary], ids=["v1", "oip-json", "oip-binary"])
def test_every_answer_says_whether_it_met_its_objective(stack: Stack, send):
    assert send(stack, None)["objective_met"] is None  # no latency objective, nothing to meet
    for _ in range(50):  # until the chosen variant is loaded: no load time in its prediction
        generous = send(stack, {"latency_ms": 60_000.0})
        assert generous["objective_met"] is True and 0 < generous["latency_ms"] < 60_000
        if generous["loaded"]:
            break
        time.sleep(0.2)  # the API learns of a new replica from the worker's next heartbeat
    assert generous["loaded"], generous
    # an objective just above the end-to-end prediction: met or not, the answer says which, by what it measured
    # (the prediction itself moves with the measured overhead, answer to answer)
    tight = generous["predicted_latency_ms"] * 1.01
    answer = send(stack, {"latency_ms": tight})
    assert answer["objective_met"] is (answer["latency_ms"] <= tight)
    # an objective the profile alone would meet but not the API and the hop: served late (over capacity,
    # the shortest wait), and the answer says it was late
    for _ in range(50):  # the overhead measured on answers reaches decisions with the next snapshot
        if generous["overhead_ms"] > 0:
            break
        time.sleep(0.1)
        generous = send(stack, {"latency_ms": 60_000.0})
    assert generous["overhead_ms"] > 0, generous
    compute = generous["predicted_latency_ms"] - generous["overhead_ms"]
    late = send(stack, {"latency_ms": compute * 1.01})
    assert late["predicted_latency_ms"] > compute * 1.01
    assert late["objective_met"] is False and late["latency_ms"] > compute * 1.01
