"""The view a query is decided on: after a lull, the API reads the cluster again before deciding,
so a replica loaded by the previous query (seconds ago) is known, not predicted as a cold start."""

from __future__ import annotations

import time

from stack_support import ARCHITECTURES, READY_TIMEOUT_S, Stack

from infaas.app.data import STALE_S


def test_a_query_after_a_lull_knows_the_replica_the_last_one_loaded(stack: Stack):
    stack.client.register(stack.paths[ARCHITECTURES[0]], name="after-lull", task="lull/digits", accuracy=0.9)
    assert stack.client.wait_ready(["after-lull"], timeout_s=READY_TIMEOUT_S)["after-lull"]["status"] == "ready"
    variant = "after-lull:onnx-fp32:cpu:b32"
    x = stack.data.x_test[:1].astype("float32")
    deadline = time.time() + 30
    while True:  # the catalogue's view follows the store: the first answer loads the replica
        try:
            _, first = stack.client.infer(x, variant=variant)
            break
        except Exception:
            assert time.time() < deadline
            time.sleep(0.2)
    assert not first["loaded"]
    time.sleep(2.0)  # a lull longer than STALE_S: the worker's heartbeats told the store, no query looked since
    _, second = stack.client.infer(x, variant=variant)
    assert second["loaded"], second["reason"]
    stack.client.delete_model("after-lull")
    assert STALE_S < 2.0
