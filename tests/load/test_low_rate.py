"""Steady low-rate traffic on the local stack: one query every 6 s for 2 minutes loads its replica
once (the same case as ``tests/unit/test_sim.py::test_steady_low_rate_traffic_loads_its_replica_once``,
on real processes and the wall clock; it takes two minutes, so it runs under ``make bench``)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from infaas.cli import digits
from infaas.client import Client
from infaas.local.launcher import StackProcess

pytestmark = pytest.mark.e2e

GAP_S, SECONDS = 6.0, 120.0


def test_one_query_every_6_s_loads_the_replica_once(tmp_path):
    data = digits.split()
    [trained] = digits.train(str(tmp_path), ["logistic-regression"], data)
    log_path = str(tmp_path / "stack.log")
    with StackProcess(workers=1, data_dir=str(tmp_path / "data"), log_path=log_path) as stack:
        client = Client(stack.url, api_key=stack.api_key)
        client.register(trained.path, name="low", task="classification/low", accuracy=0.9)
        assert client.wait_ready(["low"], timeout_s=180)["low"]["status"] == "ready"
        variant = "low:onnx-fp32:cpu:b32"
        answers = []
        start = time.monotonic()
        for i in range(int(SECONDS / GAP_S) + 1):
            time.sleep(max(0.0, start + i * GAP_S - time.monotonic()))
            _, decision = client.infer(data.x_test[i : i + 1].astype(np.float32), variant=variant, latency_ms=1000.0)
            answers.append(decision)
        log = open(log_path, encoding="utf-8", errors="replace").read()
    loads = log.count(f"loaded {variant} (")
    unloads = log.count(f"unloaded {variant}")
    cold = sum(1 for d in answers if not d["loaded"])
    print(f"\nlow rate: {len(answers)} queries {GAP_S:g} s apart; {loads} load(s), {unloads} unload(s) of {variant}; "
          f"{cold} answer(s) predicted as cold starts; service-side p50 "
          f"{np.median([d['latency_ms'] for d in answers]):.2f} ms")
    assert len(answers) == 21
    assert loads == 1 and unloads == 0, (loads, unloads)
    for i, d in enumerate(answers):
        if not d["loaded"]:
            print(f"    query {i} predicted as a cold start: {d['reason']} (measured {d['latency_ms']:.2f} ms)")
    assert all(d["loaded"] for d in answers[1:])  # after the first load, every answer knows the replica is there
