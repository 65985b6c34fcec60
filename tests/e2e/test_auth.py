"""Authentication and authorisation, route by route, on the running stack.

Each protected route answers 401 without a valid key (none, malformed,
unknown, revoked), 403 without the route's scope, and 404 for another
tenant's private model, with the same body as for a model that does not
exist. Keys never appear in the stack's log or in any error body.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from stack_support import READY_TIMEOUT_S, Stack

pytestmark = pytest.mark.e2e

ROW = json.dumps({"architecture": "logistic-regression", "inputs": [[0.0] * 64]})
OIP_ROW = json.dumps({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]})

# (method, path, scope the route needs, body)
PROTECTED = [
    ("GET", "/v1/models", "query", None),
    ("GET", "/v1/models/logistic-regression", "query", None),
    ("GET", "/v1/tasks", "query", None),
    ("GET", "/v1/workers", "admin", None),
    ("DELETE", "/v1/models/no-such-model", "register", None),
    ("POST", "/v1/infer", "query", ROW),
    ("GET", "/v2/models/logistic-regression", "query", None),
    ("GET", "/v2/models/logistic-regression/ready", "query", None),
    ("POST", "/v2/models/logistic-regression/infer", "query", OIP_ROW),
]
PUBLIC = ["/v2/health/live", "/v2/health/ready", "/v2", "/docs", "/openapi.json"]


@pytest.fixture(scope="module")
def keys(stack: Stack):
    from infaas.app import identity
    from infaas.core.settings import Settings
    from infaas.wiring.local import LocalAdapters

    store = LocalAdapters(Settings(data_dir=stack.data_dir)).store
    made = {
        "query": identity.create_key(store, "team-a", ("query",))[1],
        "register": identity.create_key(store, "team-a", ("register",))[1],
        "a": identity.create_key(store, "team-a", ("query", "register"))[1],
        "b": identity.create_key(store, "team-b", ("query", "register"))[1],
        "admin": identity.create_key(store, "ops", ("admin",))[1],
    }
    revoked_id, revoked = identity.create_key(store, "team-a", ("query", "register", "admin"))
    identity.revoke_key(store, revoked_id)
    made["revoked"] = revoked
    return made


def call(stack: Stack, method: str, path: str, body: str | None, key: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = key if key.startswith(("Bearer", "Basic")) else f"Bearer {key}"
    with httpx.Client(base_url=stack.url, timeout=30.0) as http:
        return http.request(method, path, content=body, headers=headers)


def _bad_keys(keys):
    real = keys["a"]
    return {
        "no key": None,
        "not bearer": f"Basic {real}",
        "malformed": "not-a-key",
        "unknown id": "infaas_0123456789abcdef_" + "x" * 43,
        "right id, wrong secret": real[: len("infaas_") + 17] + "y" * 43,
        "revoked": keys["revoked"],
    }


@pytest.mark.parametrize("method,path,scope,body", PROTECTED, ids=[f"{m} {p}" for m, p, _, _ in PROTECTED])
def test_every_protected_route_needs_a_valid_key(stack, keys, method, path, scope, body):
    for label, key in _bad_keys(keys).items():
        r = call(stack, method, path, body, key)
        assert r.status_code == 401, (label, r.status_code, r.text)
        doc = r.json()
        assert doc["code"] == "unauthenticated" and doc["field"] == "authorization"
        # The same answer whatever was wrong: nothing to learn about which ids exist.
        assert doc["message"] == "missing, unknown or revoked API key; send 'Authorization: Bearer <key>'"


@pytest.mark.parametrize("method,path,scope,body", PROTECTED, ids=[f"{m} {p}" for m, p, _, _ in PROTECTED])
def test_every_protected_route_checks_its_scope(stack, keys, method, path, scope, body):
    lacking = {"query": keys["register"], "register": keys["query"], "admin": keys["a"]}[scope]
    r = call(stack, method, path, body, lacking)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "forbidden" and scope in r.json()["message"]
    holder = {"query": keys["query"], "register": keys["register"], "admin": keys["admin"]}[scope]
    r = call(stack, method, path, body, holder)
    assert r.status_code not in (401, 403), r.text


def test_register_needs_the_register_scope(stack, keys):
    files = {"file": ("m.onnx", open(stack.paths["logistic-regression"], "rb").read())}
    form = {"name": "scoped-lr", "task": "classification/digits", "accuracy": "0.9"}
    with httpx.Client(base_url=stack.url, timeout=30.0) as http:
        r = http.post("/v1/models", data=form, files=files)
        assert r.status_code == 401
        r = http.post("/v1/models", data=form, files=files, headers={"authorization": f"Bearer {keys['query']}"})
        assert r.status_code == 403


@pytest.mark.parametrize("path", PUBLIC)
def test_health_and_docs_are_public(stack, path):
    assert httpx.get(stack.url + path, timeout=10).status_code == 200


def _strip(doc: dict, name: str) -> str:
    return json.dumps(doc).replace(name, "NAME")


def test_another_tenants_private_model_looks_like_no_model(stack, keys):
    """logistic-regression belongs to the tenant 'local' and is private."""
    b = keys["b"]
    pairs = [
        ("GET", "/v1/models/{}", None),
        ("GET", "/v2/models/{}", None),
        ("POST", "/v2/models/{}/infer", OIP_ROW),
        ("DELETE", "/v1/models/{}", None),
    ]
    for method, template, body in pairs:
        theirs = call(stack, method, template.format("logistic-regression"), body, b)
        missing = call(stack, method, template.format("no-such-model"), body, b)
        assert theirs.status_code == missing.status_code == 404, (template, theirs.text)
        assert _strip(theirs.json(), "logistic-regression") == _strip(missing.json(), "no-such-model")
    doc = json.loads(ROW)
    r = call(stack, "POST", "/v1/infer", json.dumps(doc), b)
    assert r.status_code == 404
    listed = call(stack, "GET", "/v1/models", None, b).json()["models"]
    assert "logistic-regression" not in {m["name"] for m in listed}
    tasks = call(stack, "GET", "/v1/tasks", None, b).json()["tasks"]
    assert all("logistic-regression" not in t["architectures"] for t in tasks)
    # A task query from team-b finds none of the local tenant's private variants.
    r = call(stack, "POST", "/v1/infer", json.dumps({"task": "classification/digits", "inputs": [[0.0] * 64]}), b)
    assert r.status_code == 404 or r.json()["decision"]["variant"].split(":")[0] not in stack.paths


def test_shared_model_serves_every_tenant_but_only_its_owner_deletes(stack, keys):
    files = {"file": ("m.onnx", open(stack.paths["mlp-32"], "rb").read())}
    form = {"name": "shared-mlp", "task": "classification/digits", "accuracy": "0.95", "visibility": "shared"}
    with httpx.Client(base_url=stack.url, timeout=60.0) as http:
        r = http.post("/v1/models", data=form, files=files, headers={"authorization": f"Bearer {keys['a']}"})
        assert r.status_code in (200, 201), r.text
    from infaas.client import Client

    Client(stack.url, api_key=keys["a"]).wait_ready(["shared-mlp"], timeout_s=READY_TIMEOUT_S)
    x = stack.data.x_test[:5]
    outputs, decision = Client(stack.url, api_key=keys["b"]).infer(x, architecture="shared-mlp")
    assert decision["variant"].startswith("shared-mlp:")
    np.testing.assert_array_equal(outputs["label"], stack.expected("mlp-32", x))
    r = call(stack, "DELETE", "/v1/models/shared-mlp", None, keys["b"])
    assert r.status_code == 403 and "owner" in r.json()["message"]
    r = call(stack, "DELETE", "/v1/models/shared-mlp", None, keys["a"])
    assert r.status_code == 204
    assert call(stack, "GET", "/v1/models/shared-mlp", None, keys["a"]).status_code == 404


def test_keys_never_reach_the_log_or_error_bodies(stack, keys):
    bodies = []
    for key in [*keys.values(), "infaas_0123456789abcdef_" + "z" * 43]:
        for method, path, _scope, body in PROTECTED:
            bodies.append(call(stack, method, path, body, key).text)
    # infaas_<16 hex id>_<secret>: the secret itself may contain '_'
    secrets = [k[len("infaas_") + 17:] for k in [*keys.values(), stack.process.api_key]]
    assert all(len(s) >= 40 for s in secrets)
    log = open(stack.log_path, encoding="utf-8", errors="replace").read()
    for secret in secrets + ["z" * 43]:
        assert secret not in log
        assert all(secret not in b for b in bodies)


def test_a_malformed_request_is_logged_as_a_json_line(stack):
    """uvicorn's own complaints go through the service's JSON lines, not plain text in the same stream."""
    import socket
    import time
    from urllib.parse import urlsplit

    url = urlsplit(stack.url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        s.recv(1024)
    deadline = time.time() + 10
    while True:
        lines = open(stack.log_path, encoding="utf-8", errors="replace").read().splitlines()
        found = [line for line in lines if "Invalid HTTP request" in line]
        if found or time.time() > deadline:
            break
        time.sleep(0.2)
    assert found, "uvicorn said nothing about the malformed request"
    for line in found:
        doc = json.loads(line)
        assert doc["level"] == "WARNING" and doc["logger"].startswith("uvicorn")
