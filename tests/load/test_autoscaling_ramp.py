"""Autoscaling end to end: a load ramp on the local stack, on loopback.

A synthetic MLP with real compute (64 -> 4096 -> 4096 -> 10) is served by
one worker. A paced load generator sends low load, then several times what
one replica is planned for, then low load again. The test asserts that the
control loop added replicas and workers during the ramp and removed them
after, that no request failed, and reports the share of requests that met
their latency objective.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from infaas.client import Client
from infaas.local.launcher import StackProcess

pytestmark = pytest.mark.e2e

OBJECTIVE_MS = 1000.0
ROWS = 256  # rows per request: enough work per request that one client process can load several replicas


def heavy_mlp(path: str) -> None:
    rng = np.random.default_rng(0)
    sizes = [64, 4096, 4096, 10]
    nodes, inits, prev = [], [], "X"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        w = numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"W{i}")
        inits.append(w)
        out = f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [out]))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            out = f"r{i}"
        prev = out
    nodes.append(helper.make_node("ArgMax", [prev], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(nodes, "heavy", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [None])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


async def paced_load(url: str, key: str, phases: list[tuple[float, float]], results: list) -> None:
    """Send requests at ``rate`` requests/s for ``seconds`` per phase (open loop, at most 256 in flight)."""
    x = np.random.default_rng(1).random((ROWS, 64), dtype=np.float32)
    raw = x.tobytes()
    head = json.dumps({"inputs": [{"name": "X", "shape": [ROWS, 64], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"latency_ms": OBJECTIVE_MS, "binary_data_output": True}}).encode()
    headers = {"inference-header-content-length": str(len(head)), "authorization": f"Bearer {key}"}
    gate = asyncio.Semaphore(256)

    async def one(http: httpx.AsyncClient) -> None:
        async with gate:
            t0 = time.perf_counter()
            try:
                r = await http.post("/v2/models/heavy/infer", content=head + raw, headers=headers)
                results.append((r.status_code, (time.perf_counter() - t0) * 1000, r.text[:200] if r.status_code != 200 else ""))
            except httpx.HTTPError as exc:
                results.append((0, (time.perf_counter() - t0) * 1000, type(exc).__name__))

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as http:
        tasks = []
        for rate, seconds in phases:
            end = time.perf_counter() + seconds
            nxt = time.perf_counter()
            while nxt < end:
                tasks.append(asyncio.create_task(one(http)))
                nxt += 1.0 / rate
                await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
        await asyncio.gather(*tasks)


def test_load_ramp_adds_then_removes_replicas_and_workers(tmp_path):
    model = str(tmp_path / "heavy.onnx")
    heavy_mlp(model)
    env = {
        "INFAAS_MIN_WORKERS": "cpu=1", "INFAAS_MAX_WORKERS": "cpu=3", "INFAAS_SCALE_PERIOD_S": "0.5",
        "INFAAS_SCALE_DOWN_PERIODS": "3", "INFAAS_SCALE_COOLDOWN_S": "2", "INFAAS_SCALE_WORKER_RELEASE_S": "2", "INFAAS_HEARTBEAT_S": "0.25",
        "INFAAS_SCALE_TARGET_UTILISATION": "0.7",
    }
    with StackProcess(workers=1, data_dir=str(tmp_path / "data"), env=env) as stack:
        client = Client(stack.url, api_key=stack.api_key)
        client.register(model, name="heavy", task="classification/synthetic", accuracy=0.9)
        status = client.wait_ready(["heavy"], timeout_s=180)
        _, decision = client.infer(np.zeros((ROWS, 64), np.float32), architecture="heavy", latency_ms=OBJECTIVE_MS)
        served = next(v for v in status["heavy"]["variants"] if v["id"] == decision["variant"])
        p50_b32 = served["profile"]["latency_ms"]["32"][0]
        per_replica = 32 * 1000 / p50_b32 * 0.7  # rows/s one replica is planned for
        low = max(2.0, 0.3 * per_replica / ROWS)  # requests/s
        high = 3.0 * per_replica / ROWS  # three replicas' worth
        started = time.time()
        results: list = []
        asyncio.run(paced_load(stack.url, stack.api_key, [(low, 3.0), (high, 6.0), (low, 12.0)], results))
        deadline = time.time() + 20  # the tail of the scale-down may still be running
        while time.time() < deadline and len(client.workers()) > 1:
            time.sleep(0.5)
        events = [e for e in client.events(since=started) if e["kind"] == "scaling"]
        workers_at_end = client.workers()

    reasons = [e["reason"] for e in events]
    peak_workers = max((max(e["data"]["desired_workers"].values()) for e in events), default=1)
    # replicas of any variant of the architecture (the selector may spread load over fp32 and int8)
    peak_replicas = max((sum(len(vs) for vs in e["data"]["assignments"].values()) for e in events), default=0)
    failed = [r for r in results if r[0] != 200]
    met = sum(1 for r in results if r[0] == 200 and r[1] <= OBJECTIVE_MS) / len(results)
    print(f"\nautoscaling ramp: per replica {per_replica:.0f} rows/s, low {low:.1f} req/s, high {high:.1f} req/s x {ROWS} rows; "
          f"{len(results)} requests, {len(failed)} failed, {met:.1%} within {OBJECTIVE_MS:g} ms, "
          f"p99 {np.percentile([r[1] for r in results], 99):.0f} ms; peak {peak_replicas} replicas on {peak_workers} workers; "
          f"{len(workers_at_end)} worker(s) at the end")
    for r in reasons:
        print("   ", r)
    assert not failed, failed[:5]
    grew = [i for i, r in enumerate(reasons) if "replicas of heavy:" in r and "-> 1 " not in r.split(";")[0]]
    assert grew, reasons  # replicas added
    assert peak_workers >= 2 and peak_replicas >= 2  # then workers, to hold them
    up = next(i for i, r in enumerate(reasons) if "cpu workers: 1 ->" in r)
    down = [i for i, r in enumerate(reasons) if "cpu workers:" in r and r.split("cpu workers: ")[1].split(" ")[0] > r.split("-> ")[1].split(" ")[0]]
    assert down and down[-1] > up, reasons  # and removed after the ramp
    assert len(workers_at_end) == 1
