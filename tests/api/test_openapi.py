"""The API's own description, through the API in process: ``/docs`` and ``/redoc`` load every
script and style from the service itself (no CDN), the OpenAPI document has the bearer scheme and
a lock on each route that needs a key, FastAPI's 422 "Validation Error" is documented nowhere
(bad input is a 400), and for a catalogue of real bad requests the status the API answers is one
the document lists for that route.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from stack_support import ARCHITECTURES, Stack
from test_bad_input import model_bytes, oip_binary, oip_tensor, raw_post, register, row

from infaas.app.identity import create_key
from infaas.cli import digits

ARCH = ARCHITECTURES[0]
OTHER = ARCHITECTURES[1]
ERROR_REF = "#/components/schemas/ErrorBody"
# The only routes that answer 422 (an objective no variant meets), as the API really does.
ANSWERS_422 = {("post", "/v1/infer"), ("post", "/v2/models/{name}/infer"), ("post", "/v1/jobs")}


@pytest.fixture(scope="module")
def schema(stack: Stack) -> dict:
    resp = stack.http.get("/openapi.json")
    assert resp.status_code == 200
    return resp.json()


def operations(schema: dict):
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def _local_urls(html: str) -> list[str]:
    urls = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)["\']', html)
    assert urls, html
    return urls


@pytest.mark.parametrize("page,kinds", [("/docs", {"text/javascript", "text/css"}), ("/redoc", {"text/javascript"})])
def test_docs_pages_load_every_asset_from_the_service(stack: Stack, page: str, kinds: set[str]):
    resp = stack.http.get(page, headers={"authorization": ""})  # no key: the docs are public
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html"), resp.text[:300]
    html = resp.text
    assert "http://" not in html and "https://" not in html, html  # nothing from another host, fonts included
    assert "/openapi.json" in html
    seen = set()
    for url in _local_urls(html):
        assert url.startswith("/") and not url.startswith("//"), url
        asset = stack.http.get(url)
        assert asset.status_code == 200, (url, asset.status_code)
        assert len(asset.content) > 1000, url
        kind = asset.headers["content-type"].split(";")[0]
        seen.add(kind)
        if kind == "text/javascript":
            assert b"function" in asset.content[:5000], url
        elif kind == "text/css":
            assert b"{" in asset.content[:5000], url
    assert kinds <= seen, seen


def test_unknown_docs_asset_is_a_404(stack: Stack):
    for name in ("nope.js", "..%2Fdocs.py", "core.py"):
        resp = stack.http.get(f"/docs/assets/{name}")
        assert resp.status_code == 404, (name, resp.status_code)
        assert resp.json()["code"] in ("not_found", "http")  # no such asset, or no such route


def test_the_bearer_scheme_and_a_lock_on_each_route_that_needs_a_key(schema: dict):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    locked = {(m, p): op["security"][0]["bearer"] for m, p, op in operations(schema)
              if len(op.get("security", ())) == 1 and "bearer" in op["security"][0]}
    for needed, scope in [(("post", "/v1/infer"), "query"), (("post", "/v2/models/{name}/infer"), "query"),
                          (("post", "/v1/models"), "register"), (("get", "/v1/models"), "query"),
                          (("delete", "/v1/models/{name}"), "register"), (("get", "/v1/workers"), "admin"),
                          (("get", "/metrics"), "admin"), (("get", "/v2/models/{name}/stats"), "query"),
                          (("get", "/v1/console"), "query"), (("post", "/v1/jobs"), "query")]:
        assert locked.get(needed) == [scope], (needed, locked.get(needed))  # the scope, as OpenAPI 3.1's role
        assert f"`{scope}` scope" in schema["paths"][needed[1]][needed[0]]["description"]
    for public in [("get", "/v2/health/live"), ("get", "/v2/health/ready"), ("get", "/v2")]:
        assert public not in locked, public
        assert "401" not in schema["paths"][public[1]][public[0]]["responses"]


def test_no_route_documents_fastapis_validation_error(schema: dict):
    text = json.dumps(schema)
    assert "HTTPValidationError" not in text and "#/components/schemas/ValidationError" not in text
    for method, path, op in operations(schema):
        responses = op["responses"]
        if (method, path) in ANSWERS_422:
            assert "objective" in responses["422"]["description"], (method, path)
        else:
            assert "422" not in responses, (method, path, responses.get("422"))
        if op.get("parameters") or op.get("requestBody"):
            assert "400" in responses, (method, path)
        for status, r in responses.items():
            if status[0] in "45":
                assert r["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}, (method, path, status)
    assert set(schema["components"]["schemas"]["ErrorBody"]["properties"]) == {"error", "code", "message", "field", "details"}


def test_every_locked_route_documents_the_key_errors(schema: dict):
    for method, path, op in operations(schema):
        if op.get("security"):
            assert {"401", "403", "429", "503"} <= set(op["responses"]), (method, path, sorted(op["responses"]))


# ----------------------------------------------------------------- real bad requests against the document
def _keys(stack: Stack) -> dict[str, str]:
    store = stack.http.app.state.services.control.store
    return {scope: create_key(store, "local", (scope,))[1] for scope in ("query", "register")}


def _as(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}" if key else "Bearer infaas_0123456789abcdef_" + "x" * 43}


def _catalogue(stack: Stack, keys: dict[str, str]):
    """(method, route template, status the request must get, the request)."""
    h, arch_row = stack.http, row(stack).tolist()
    ok_row = {"architecture": ARCH, "inputs": arch_row}
    big = np.zeros((4097, 64), dtype=np.float32)
    return [
        ("post", "/v1/infer", 400, lambda: raw_post(stack, "/v1/infer", b'{"architecture": "x", "inputs": [[0.1,')),
        ("post", "/v1/infer", 400, lambda: h.post("/v1/infer", json={"architecture": ARCH, "objective": {"latency_ms": "fast"},
                                                                     "inputs": arch_row})),
        ("post", "/v1/infer", 400, lambda: h.post("/v1/infer", json={"architecture": ARCH, "inputs": row(stack, 2)[:, :63].tolist()})),
        ("post", "/v1/infer", 413, lambda: raw_post(stack, "/v1/infer", b'{"inputs": [' + b" " * (9 << 20) + b"]}")),
        ("post", "/v1/infer", 404, lambda: h.post("/v1/infer", json={"architecture": "no-such-model", "inputs": arch_row})),
        ("post", "/v1/infer", 422, lambda: h.post("/v1/infer", json={"task": digits.TASK, "objective": {"min_accuracy": 0.9999},
                                                                     "inputs": arch_row})),
        ("post", "/v1/infer", 401, lambda: h.post("/v1/infer", json=ok_row, headers=_as(None))),
        ("post", "/v1/infer", 403, lambda: h.post("/v1/infer", json=ok_row, headers=_as(keys["register"]))),
        ("post", "/v2/models/{name}/infer", 400, lambda: oip_binary(stack, ARCH, row(stack, 2)[:, :63])),
        ("post", "/v2/models/{name}/infer", 400, lambda: h.post(f"/v2/models/{ARCH}/infer", json={"inputs": "x"})),
        ("post", "/v2/models/{name}/infer", 404, lambda: oip_binary(stack, "no-such-model", row(stack))),
        ("post", "/v2/models/{name}/infer", 413, lambda: oip_binary(stack, ARCH, big)),
        ("post", "/v2/models/{name}/infer", 422, lambda: h.post(f"/v2/models/{ARCH}/infer", json={
            "inputs": [oip_tensor(row(stack))], "parameters": {"latency_ms": 1e-6}})),
        ("get", "/v2/models/{name}", 404, lambda: h.get("/v2/models/no-such-model")),
        ("get", "/v2/models/{name}/ready", 404, lambda: h.get("/v2/models/no-such-model/ready")),
        ("get", "/v2/models/{name}/stats", 404, lambda: h.get("/v2/models/no-such-model/stats")),
        ("get", "/v2/models/stats", 401, lambda: h.get("/v2/models/stats", headers=_as(None))),
        ("post", "/v1/models", 400, lambda: register(stack, name="bad-upload", file=b"not onnx")),
        ("post", "/v1/models", 400, lambda: register(stack, name="x y", file=model_bytes(stack))),
        ("post", "/v1/models", 400, lambda: register(stack, name="no-accuracy", file=model_bytes(stack), accuracy=None)),
        ("post", "/v1/models", 409, lambda: register(stack, name=ARCH, file=model_bytes(stack, OTHER), accuracy="0.9")),
        ("post", "/v1/models", 403, lambda: h.post("/v1/models", headers=_as(keys["query"]),
                                                   data={"name": "q", "task": digits.TASK, "accuracy": "0.9"},
                                                   files={"file": ("m.onnx", b"x")})),
        ("get", "/v1/models/{name}", 404, lambda: h.get("/v1/models/no-such-model")),
        ("delete", "/v1/models/{name}", 404, lambda: h.delete("/v1/models/no-such-model")),
        ("delete", "/v1/models/{name}", 403, lambda: h.delete(f"/v1/models/{ARCH}", headers=_as(keys["query"]))),
        ("get", "/v1/models/{name}/logs", 404, lambda: h.get("/v1/models/no-such-model/logs")),
        ("get", "/v1/models", 401, lambda: h.get("/v1/models", headers=_as(None))),
        ("get", "/v1/workers", 403, lambda: h.get("/v1/workers", headers=_as(keys["query"]))),
        ("get", "/v1/events", 400, lambda: h.get("/v1/events", params={"since": "yesterday"})),
        ("get", "/metrics", 403, lambda: h.get("/metrics", headers=_as(keys["query"]))),
        ("get", "/metrics", 401, lambda: h.get("/metrics", headers=_as(None))),
        ("get", "/v1/console", 401, lambda: h.get("/v1/console", headers=_as(None))),
        ("get", "/v1/decisions", 400, lambda: h.get("/v1/decisions", params={"limit": "many"})),
        ("post", "/v1/jobs", 400, lambda: raw_post(stack, "/v1/jobs", b"[1, 2]")),
        ("post", "/v1/jobs", 400, lambda: h.post("/v1/jobs", json={"input": "in", "output": "out"})),
        ("get", "/v1/jobs/{job_id}", 404, lambda: h.get("/v1/jobs/no-such-job")),
        ("post", "/v1/jobs/{job_id}/cancel", 404, lambda: h.post("/v1/jobs/no-such-job/cancel")),
    ]


def test_each_status_the_api_answers_is_documented_for_its_route(stack: Stack, schema: dict):
    keys = _keys(stack)
    seen = set()
    for method, template, status, send in _catalogue(stack, keys):
        resp = send()
        assert resp.status_code == status, (method, template, status, resp.status_code, resp.text[:300])
        assert resp.json()["error"], resp.text
        documented = schema["paths"][template][method]["responses"]
        assert str(status) in documented, (method, template, status, sorted(documented))
        seen.add(status)
    assert seen >= {400, 401, 403, 404, 409, 413, 422}
    stack.assert_serving()


def test_429_and_503_where_they_happen(tmp_path):
    """A stack of its own with a rate of one request a second and no worker: the rate limit's 429
    and the health check's 503 are real, and documented on those routes."""
    from infaas.adapters.workerclient import InProcessWorkerClient
    from infaas.api.app import create_app
    from infaas.api.deps import Services
    from infaas.app.control import ControlPlane
    from infaas.app.data import DataPlane
    from infaas.core.settings import Settings
    from infaas.wiring.local import LocalAdapters

    settings = Settings(data_dir=str(tmp_path), tenant_rps=1.0, tenant_burst=1.0)
    adapters = LocalAdapters(settings)
    app = create_app(Services(ControlPlane(adapters.store, adapters.models, adapters.queue, settings),
                              DataPlane(adapters.store, InProcessWorkerClient({}), settings), settings))
    _, key = create_key(adapters.store, "tiny", ("query",))
    with TestClient(app, raise_server_exceptions=False) as http:
        doc = http.get("/openapi.json").json()
        answers = [http.get("/v1/models", headers={"authorization": f"Bearer {key}"}) for _ in range(3)]
        assert [r.status_code for r in answers][0] == 200
        limited = answers[-1]
        assert limited.status_code == 429 and "retry-after" in limited.headers, limited.text
        assert "429" in doc["paths"]["/v1/models"]["get"]["responses"]
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "503" in doc["paths"]["/v2/health/ready"]["get"]["responses"]
