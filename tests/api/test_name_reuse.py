"""A name deleted and registered again, by another tenant and with another model, answers with the
new model at once: the worker's replica of the old one is not reused (the API names the variant's
file in every call; a replica of another file is loaded afresh), and nothing of the old model's
traffic shows in the new owner's statistics or console."""

from __future__ import annotations

import time

import numpy as np
from stack_support import ARCHITECTURES, READY_TIMEOUT_S, Stack

from infaas.app.identity import create_key
from infaas.cli import digits

NAME = "reuse-me"
VARIANT = f"{NAME}:onnx-fp32:cpu:b32"


def register(stack: Stack, path: str, key: str | None = None):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with open(path, "rb") as f:
        resp = stack.http.post("/v1/models", headers=headers, files={"file": ("m.onnx", f.read())},
                               data={"name": NAME, "task": "reuse/digits", "accuracy": "0.9"})
    assert resp.status_code in (200, 201), resp.text
    deadline = time.time() + READY_TIMEOUT_S
    while True:
        status = stack.http.get(f"/v1/models/{NAME}", headers=headers).json()
        if status.get("status") in ("ready", "failed"):
            assert status["status"] == "ready", status
            return
        assert time.time() < deadline, status
        time.sleep(0.2)


def labels(stack: Stack, x: np.ndarray, key: str | None = None) -> np.ndarray:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    deadline = time.time() + 30
    while True:  # the API's snapshot of the catalogue follows the store within a second
        resp = stack.http.post("/v1/infer", headers=headers, json={"variant": VARIANT, "inputs": x.tolist()})
        if resp.status_code == 200:
            label = next(o for o in resp.json()["outputs"] if o["name"] == "label")
            return np.asarray(label["data"]).reshape(-1)
        assert resp.status_code in (404, 503) and time.time() < deadline, resp.text
        time.sleep(0.2)


def test_a_name_registered_again_answers_with_the_new_model(stack: Stack):
    first, second = (stack.models[a] for a in ARCHITECTURES[:2])
    x = stack.data.x_test.astype(np.float32)
    differ = first.predict(x) != second.predict(x)
    assert differ.sum() >= 5, "the two models must disagree somewhere for this test to tell them apart"
    x = x[differ][:16]

    register(stack, stack.paths[ARCHITECTURES[0]])
    np.testing.assert_array_equal(labels(stack, x), first.predict(x))  # loaded on the worker now
    assert stack.http.delete(f"/v1/models/{NAME}").status_code == 204

    _, other = create_key(stack.http.app.state.services.control.store, "team-reuse", ("query", "register"))
    register(stack, stack.paths[ARCHITECTURES[1]], other)
    got = labels(stack, x, other)
    np.testing.assert_array_equal(got, second.predict(x))  # the new model, not the replica of the old
    assert (got != first.predict(x)).all()

    stats = stack.http.get(f"/v2/models/{NAME}/stats", headers={"authorization": f"Bearer {other}"}).json()
    [entry] = [m for m in stats["model_stats"] if m["version"] == VARIANT]
    assert entry["inference_count"] == len(x)  # its own queries only, none of the deleted model's
    console = stack.http.get("/v1/console", headers={"authorization": f"Bearer {other}"}).json()
    assert {o["task"] for o in console["objectives"]} <= {"reuse/digits"}
    stack.http.delete(f"/v1/models/{NAME}", headers={"authorization": f"Bearer {other}"})
    assert digits.TASK != "reuse/digits"
