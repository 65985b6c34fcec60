"""What the API tells about its own traffic, through the API in process after real queries:
``GET /metrics`` (Prometheus text, parsed with prometheus_client's own parser), the per-model
statistics in Triton's shape (``/v2/models/stats``), and the access log (one JSON line per request,
with the request id the answer carries, which the worker's lines carry too).
"""

from __future__ import annotations

import json
import math
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from stack_support import ARCHITECTURES, Stack

from infaas.app.identity import create_key
from infaas.cli import digits

ARCH = ARCHITECTURES[0]
WORKER = "cpu-1"  # the in-process tier's one worker (tests/api/conftest.py)


def scrape(stack: Stack) -> dict[tuple[str, tuple], float]:
    resp = stack.http.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples: dict, name: str) -> list[dict]:
    return [dict(labels) for (n, labels) in samples if n == name]


def query(stack: Stack, latency_ms: float | None = None, **target) -> dict:
    doc = {**(target or {"architecture": ARCH}), "inputs": stack.data.x_test[:2].tolist()}
    if latency_ms is not None:
        doc["objective"] = {"latency_ms": latency_ms}
    resp = stack.http.post("/v1/infer", json=doc)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_metrics_after_real_queries(stack: Stack):
    before = scrape(stack)
    answers = [query(stack) for _ in range(3)]
    answers += [query(stack, latency_ms=10_000.0) for _ in range(3)]  # met
    refused = stack.http.post("/v1/infer", json={"architecture": ARCH, "objective": {"latency_ms": 1e-6},
                                                 "inputs": stack.data.x_test[:2].tolist()})
    assert refused.status_code == 422
    # just above the best prediction: selectable, though the service's own time may well be more
    tight = refused.json()["details"]["best_latency_ms"] * 1.1
    answers += [query(stack, latency_ms=tight) for _ in range(3)]
    after = scrape(stack)

    def moved(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # requests by route and status, and their durations
    assert moved("infaas_http_requests_total", method="POST", route="/v1/infer", status="200") == len(answers)
    assert moved("infaas_http_requests_total", method="POST", route="/v1/infer", status="422") == 1
    assert value(after, "infaas_http_requests_total", method="GET", route="/metrics", status="200") >= 1
    assert moved("infaas_http_request_duration_seconds_count", method="POST", route="/v1/infer") == len(answers) + 1
    assert moved("infaas_http_request_duration_seconds_sum", method="POST", route="/v1/infer") > 0
    buckets = sorted((float(b["le"]), value(after, "infaas_http_request_duration_seconds_bucket", **b))
                     for b in series(after, "infaas_http_request_duration_seconds_bucket")
                     if b["route"] == "/v1/infer" and b["method"] == "POST")
    assert buckets[-1][0] == math.inf and [n for _, n in buckets] == sorted(n for _, n in buckets)
    templates = set(stack.http.get("/openapi.json").json()["paths"]) | {
        "unmatched", "/openapi.json", "/docs", "/redoc", "/docs/assets/{name}", "/console", "/console/console.js"}
    routes = {b["route"] for b in series(after, "infaas_http_requests_total")}
    assert routes <= templates, routes - templates  # templates, never names or ids as sent

    # objectives met and missed, by task and tenant: as the answers' own measured latency says
    late = sum(1 for a in answers[6:] if a["latency_ms"] > tight)
    assert moved("infaas_objective_met_total", task=digits.TASK, tenant="local") == 3 + (3 - late)
    assert moved("infaas_objective_missed_total", task=digits.TASK, tenant="local") == late
    assert ("infaas_objective_missed_total", (("task", digits.TASK), ("tenant", "local"))) in after

    # selections per variant, worker calls
    by_variant: dict[str, int] = {}
    for a in answers:
        by_variant[a["decision"]["variant"]] = by_variant.get(a["decision"]["variant"], 0) + 1
    for variant, n in by_variant.items():
        assert moved("infaas_selections_total", variant=variant) == n
        assert moved("infaas_worker_calls_total", variant=variant, outcome="ok") >= 1
    # the replicas that answered are loaded on the worker, with their queue depth (as its records say:
    # a replica loaded a moment ago is there from the worker's next heartbeat)
    deadline = time.time() + 15.0
    while not all(value(after, "infaas_replicas", worker=WORKER, variant=v) == 1 for v in by_variant):
        assert time.time() < deadline, series(after, "infaas_replicas")
        time.sleep(0.2)
        after = scrape(stack)
    for variant in by_variant:
        assert (("infaas_replica_queued_rows", tuple(sorted({"worker": WORKER, "variant": variant}.items())))
                in after)

    # worker health
    assert value(after, "infaas_workers", state="up") >= 1
    assert {"up", "draining", "suspect"} <= {s["state"] for s in series(after, "infaas_workers")}
    assert value(after, "process_cpu_seconds_total") > 0  # prometheus_client's own collectors, in this registry


def test_metrics_need_an_admin_key(stack: Stack):
    store = stack.http.app.state.services.control.store
    _, key = create_key(store, "local", ("query",))
    assert stack.http.get("/metrics", headers={"authorization": f"Bearer {key}"}).status_code == 403
    assert stack.http.get("/metrics", headers={"authorization": "Bearer nope"}).status_code == 401


def test_each_app_has_its_own_registry(stack: Stack, tmp_path):
    """A second app in this process counts only its own requests, and nothing goes to the global registry."""
    import prometheus_client

    from infaas.adapters.workerclient import InProcessWorkerClient
    from infaas.api.app import create_app
    from infaas.api.deps import Services
    from infaas.app.control import ControlPlane
    from infaas.app.data import DataPlane
    from infaas.core.settings import Settings
    from infaas.wiring.local import LocalAdapters

    scrape(stack)
    settings = Settings(data_dir=str(tmp_path), auth="off")
    adapters = LocalAdapters(settings)
    app = create_app(Services(ControlPlane(adapters.store, adapters.models, adapters.queue, settings),
                              DataPlane(adapters.store, InProcessWorkerClient({}), settings), settings))
    with TestClient(app) as http:
        text = http.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert value(samples, "infaas_http_requests_total", method="POST", route="/v1/infer", status="200") == 0
    assert not series(samples, "infaas_selections_total")
    assert b"infaas_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


# ----------------------------------------------------------------- per-model statistics (Triton's shape)
def stats(stack: Stack, path: str = "/v2/models/stats", key: str | None = None) -> dict:
    headers = {"authorization": f"Bearer {key}"} if key else None
    resp = stack.http.get(path, headers=headers)
    assert resp.status_code == 200, resp.text
    return {(m["name"], m["version"]): m for m in resp.json()["model_stats"]}


def test_model_statistics_count_real_queries(stack: Stack):
    before = stats(stack, f"/v2/models/{ARCH}/stats")
    assert before and all(name == ARCH for name, _ in before)
    answers = [query(stack) for _ in range(4)]
    variant = answers[0]["decision"]["variant"]
    after = stats(stack, f"/v2/models/{ARCH}/stats")
    b, a = before[(ARCH, variant)], after[(ARCH, variant)]
    n = sum(1 for x in answers if x["decision"]["variant"] == variant)
    assert a["inference_stats"]["success"]["count"] - b["inference_stats"]["success"]["count"] == n
    assert a["inference_stats"]["success"]["ns"] > b["inference_stats"]["success"]["ns"]
    assert a["inference_count"] - b["inference_count"] == 2 * n  # rows: two per query
    assert 1 <= a["execution_count"] - b["execution_count"] <= n  # worker calls, after coalescing
    assert a["inference_stats"]["compute_infer"]["ns"] > b["inference_stats"]["compute_infer"]["ns"]
    assert a["inference_stats"]["fail"] == b["inference_stats"]["fail"]
    assert a["last_inference"] >= b["last_inference"] and a["last_inference"] > (time.time() - 60) * 1000
    # by variant and by task too; every model the tenant may query in the list of all
    assert set(stats(stack, f"/v2/models/{variant}/stats")) == {(ARCH, variant)}
    assert {name for name, _ in stats(stack, f"/v2/models/{digits.TASK}/stats")} >= set(ARCHITECTURES)
    assert {name for name, _ in stats(stack)} >= set(ARCHITECTURES)


def test_model_statistics_are_tenant_scoped(stack: Stack):
    store = stack.http.app.state.services.control.store
    _, other = create_key(store, "team-stats", ("query",))
    assert not {name for name, _ in stats(stack, key=other)} & set(ARCHITECTURES)  # private to the tenant "local"
    resp = stack.http.get(f"/v2/models/{ARCH}/stats", headers={"authorization": f"Bearer {other}"})
    assert resp.status_code == 404 and resp.json()["code"] == "not_found"
    assert stack.http.get("/v2/models/no-such-model/stats").status_code == 404


def test_a_shared_models_statistics_are_its_owners(stack: Stack):
    """Every tenant may query another's shared model, but its counts are every tenant's traffic:
    only the owner sees them."""
    import dataclasses

    store = stack.http.app.state.services.control.store
    arch = store.get_architecture(ARCH)
    shared = dataclasses.replace(arch, name="stats-shared", tenant="team-owner", visibility="shared", task="t/stats")
    store.create_architecture(shared)
    for v in store.variants_of(ARCH)[:1]:
        store.put_variant(dataclasses.replace(v, architecture=shared.name, tenant=shared.tenant,
                                              visibility="shared", task=shared.task))
    _, owner = create_key(store, "team-owner", ("query",))
    stack.http.app.state.services.data.snapshot(force=True)
    try:
        assert "stats-shared" in {a["name"] for a in stack.http.get("/v1/models").json()["models"]}  # queryable
        assert "stats-shared" not in {name for name, _ in stats(stack)}  # but its figures are not ours
        assert stack.http.get("/v2/models/stats-shared/stats").json() == {"model_stats": []}
        assert "stats-shared" in {name for name, _ in stats(stack, key=owner)}
    finally:
        store.delete_architecture(shared.name)


# ----------------------------------------------------------------- access log and request ids
def access_lines(stack: Stack) -> list[dict]:
    out = []
    with open(stack.log_path, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if doc.get("logger") == "infaas.access":
                out.append(doc)
    return out


def lines_with(stack: Stack, request_id: str) -> list[dict]:
    with open(stack.log_path, encoding="utf-8") as f:
        return [doc for doc in map(json.loads, f) if doc.get("request_id") == request_id]


def test_a_query_has_one_access_line_with_its_request_id(stack: Stack):
    resp = stack.http.post("/v1/infer", json={"architecture": ARCH, "inputs": stack.data.x_test[:1].tolist()},
                           headers={"x-request-id": "trace-access.1"})
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "trace-access.1"
    (line,) = [d for d in access_lines(stack) if d["request_id"] == "trace-access.1"]
    assert line["method"] == "POST" and line["path"] == "/v1/infer" and line["route"] == "/v1/infer"
    assert line["status"] == 200 and line["tenant"] == "local" and 0 < line["duration_ms"] < 60_000
    assert line["level"] == "INFO" and line["message"].startswith("POST /v1/infer 200")

    # an id the service made, on the OIP route and on a FastAPI route; refusals are logged too
    oip = stack.http.post(f"/v2/models/{ARCH}/infer", json={"inputs": [
        {"name": "X", "shape": [1, 64], "datatype": "FP32", "data": stack.data.x_test[0].tolist()}]})
    made = oip.headers["x-request-id"]
    assert oip.status_code == 200 and len(made) == 32
    (line,) = [d for d in access_lines(stack) if d["request_id"] == made]
    assert line["route"] == "/v2/models/{name}/infer" and line["path"] == f"/v2/models/{ARCH}/infer"
    listed = stack.http.get("/v1/models", headers={"x-request-id": "trace-list.2"})
    assert listed.headers["x-request-id"] == "trace-list.2"
    (line,) = [d for d in access_lines(stack) if d["request_id"] == "trace-list.2"]
    assert line["route"] == "/v1/models" and line["status"] == 200 and line["tenant"] == "local"
    bad = stack.http.post("/v1/infer", content=b"{", headers={"x-request-id": "trace-bad.3", "authorization": "Bearer x"})
    assert bad.status_code == 401 and bad.headers["x-request-id"] == "trace-bad.3"
    (line,) = [d for d in access_lines(stack) if d["request_id"] == "trace-bad.3"]
    assert line["status"] == 401 and line["tenant"] is None


def test_the_worker_logs_under_the_querys_request_id(stack: Stack):
    """The id travels with the rows: a replica loaded for this query is logged by the worker under it."""
    client = stack.http.app.state.services.data.client
    agent = next(iter(client.workers.values()))  # the in-process worker (through the metered client)
    variant = f"{ARCH}:onnx-fp32:cpu:b32"
    stack.http.portal.call(agent.cache.unload, variant)
    resp = stack.http.post("/v1/infer", json={"variant": variant, "inputs": stack.data.x_test[:1].tolist()},
                           headers={"x-request-id": "trace-worker.4"})
    assert resp.status_code == 200, resp.text  # (the decision may still think it loaded: heartbeats lag)
    lines = lines_with(stack, "trace-worker.4")
    assert any(d["logger"].startswith("infaas.worker") and d["message"].startswith(f"loaded {variant}") for d in lines), lines
    assert any(d["logger"] == "infaas.access" for d in lines), lines


@pytest.mark.parametrize("path", ["/v2/health/live", "/docs"])
def test_public_routes_are_logged_without_a_tenant(stack: Stack, path: str):
    resp = stack.http.get(path, headers={"x-request-id": f"trace-public{path.replace('/', '.')}"})
    (line,) = [d for d in access_lines(stack) if d["request_id"] == resp.headers["x-request-id"]]
    assert line["route"] == path and line["status"] == 200 and line["tenant"] is None
