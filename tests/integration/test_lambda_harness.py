"""The functions as deployed (``lambda_harness``): built layer and staged code, Lambda's Python,
frozen between invocations, behind API Gateway's REST proxy rules, on a moto server.

keys made by ``infaas tenants create`` against the table -> register with a bearer key through the
API-key API (its REQUEST authorizer, run as deployed, answers cached) -> two worker processes take the
build job -> queries through the selector with the key and as an IAM caller (JSON, OIP,
tritonclient in JSON and binary through a loopback HTTP front, the key in a header) -> a wrong or
revoked key is 401, a key without the route's scope 403, a revoked key stops within the cache TTL
-> one worker drained -> no query is served by it once its drain is recorded, none fails ->
workers whose instance is gone (refusing, or black-holing connections) cost a retry, and the
answer still comes within API Gateway's 29 s -> the autoscaler function runs one control period.

Each function's cold import is measured and printed (``docs/aws.md``: cold starts).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from aws_support import start_worker, stop_worker, tail
from lambda_harness import (
    API_TIMEOUT_S,
    ApiGateway,
    HttpFront,
    LambdaFunction,
    build_assets,
)

ARCH = "digits-harness"
TASK = "classification/digits-harness"
READY_TIMEOUT_S = 150.0
# what the stack sets (cdk/infaas_cdk/functions.py)
STACK_ENV = {"INFAAS_MAX_BODY_BYTES": str(5 << 20), "POWERTOOLS_METRICS_NAMESPACE": "Infaas",
             "POWERTOOLS_LOG_LEVEL": "INFO", "INFAAS_BUILD_HARDWARE": "cpu"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_assets(tmp_path_factory.mktemp("lambda-assets"))


@pytest.fixture(scope="module")
def functions(assets, deployment, tmp_path_factory):
    logs = tmp_path_factory.mktemp("lambda-logs")
    base = {k: v for k, v in deployment.env.items() if not k.startswith("POWERTOOLS_")}
    fns = {
        "frontend": LambdaFunction("frontend", assets, {**base, **STACK_ENV}, logs / "frontend.log", memory_mb=2048),
        "selector": LambdaFunction("selector", assets, {**base, **STACK_ENV, "INFAAS_SNAPSHOT_S": "1.0"},
                                   logs / "selector.log"),
        "autoscaler": LambdaFunction(
            "autoscaler", assets,
            {**base, **STACK_ENV, "INFAAS_FLEET_GROUPS": json.dumps({"cpu": f"{deployment.prefix}-workers-cpu"}),
             "INFAAS_SCALE_PERIOD_S": "60"}, logs / "autoscaler.log", timeout_s=60, memory_mb=512),
        # what the stack gives the authorizer (cdk/infaas_cdk/functions.py): the table's name, nothing else
        "authorizer": LambdaFunction(
            "authorizer", assets, {**{k: v for k, v in base.items() if k.startswith("AWS_")},
                                   "INFAAS_BACKEND": "aws", "INFAAS_TABLE": deployment.table,
                                   "POWERTOOLS_LOG_LEVEL": "INFO"}, logs / "authorizer.log", timeout_s=10,
            memory_mb=512),
    }
    try:
        yield fns
    finally:
        for fn in fns.values():
            fn.kill()


@pytest.fixture(scope="module")
def api(functions):
    """The IAM API: the caller is the IAM user ``tester`` (tenant ``iam:123456789012:user/tester``)."""
    return ApiGateway(functions)


@pytest.fixture(scope="module")
def keys_api(functions):
    """The API-key API: every request through the authorizer function, answers cached as the stack says."""
    return ApiGateway(functions, authorizer=functions["authorizer"])


def tenant_key(deployment, tenant: str, scopes: str) -> str:
    """``infaas tenants create`` against the deployment's table, as an operator runs it."""
    done = subprocess.run([sys.executable, "-m", "infaas.cli", "tenants", "create", tenant, "--scopes", scopes],
                          env={**os.environ, **deployment.env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def keys(deployment):
    return {scopes: tenant_key(deployment, "team-harness", scopes)
            for scopes in ("query,register", "query", "register")}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def store(deployment):
    from infaas.adapters.aws.dynamodb import DynamoItemTable
    from infaas.app.store import MetadataStore

    return MetadataStore(DynamoItemTable(deployment.table, client=deployment.client("dynamodb")))


@pytest.fixture(scope="module")
def workers(deployment, tmp_path_factory):
    procs = {wid: start_worker(deployment.env, tmp_path_factory.mktemp(wid), wid) for wid in ("i-0first", "i-0second")}
    try:
        yield procs
    finally:
        for proc in procs.values():
            stop_worker(proc)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from infaas.cli import digits

    data = digits.split()
    folder = tmp_path_factory.mktemp("models")
    (model,) = digits.train(str(folder), names=["logistic-regression"], data=data)
    return model, data


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://upload.invalid/", data=fields, files=files)
    return request.read(), request.headers["content-type"]


def test_each_function_starts_from_the_built_artefacts_only(functions, assets, keys, capsys):
    """Every function's cold start, in Lambda's interpreter with nothing but its assets on the path;
    the selector loads no control plane: no registration (onnx, python-multipart's parser), no
    offline jobs, no Prometheus, no documentation pages; the authorizer nothing but the key lookup
    (no web framework, no numpy)."""
    figures = {}
    for name in ("frontend", "selector"):
        r = ApiGateway(functions).request("GET", "/v2/health/live" if name == "selector" else "/v1/tasks")
        assert r.status == 200, (name, r.status, r.body, functions[name].logs()[-2000:])
        assert r.invocation.cold
    r = ApiGateway(functions, authorizer=functions["authorizer"]).request("GET", "/v2/health/live",
                                                                          headers=bearer(keys["query"]))
    assert r.status == 200, (r.status, r.body, functions["authorizer"].logs()[-2000:])
    (init_authorizer,) = functions["authorizer"].cold_starts
    assert not [p for p in init_authorizer["path"] if "site-packages" in p or ".venv" in p]
    for module in ("fastapi", "starlette", "numpy", "onnx", "mangum"):
        assert module not in init_authorizer["modules"], module
    (init_frontend,) = functions["frontend"].cold_starts
    (init_selector,) = functions["selector"].cold_starts
    for init in (init_frontend, init_selector):
        assert not [p for p in init["path"] if "site-packages" in p or ".venv" in p], init["path"]
        assert init["path"][:3] == [str(assets.functions["frontend" if init is init_frontend else "selector"]),
                                    str(assets.layer), str(assets.runtime)]
    for module in ("onnx", "prometheus_client", "fastapi_offline", "multipart"):
        assert module not in init_selector["modules"], module
    for module in ("infaas.app.offline", "infaas.api.control", "infaas.api.jobs", "infaas.runtime.validate"):
        assert module not in init_selector["infaas_modules"], module
    figures = {n: round(fn.cold_starts[0]["init_s"], 3) for n, fn in functions.items() if fn.cold_starts}
    with capsys.disabled():
        print(f"\ncold import (s), python {assets.python_version}, "
              f"{'with' if assets.bytecode else 'without'} bytecode: {figures}; assets built in {assets.build_s:.1f} s")


@pytest.fixture(scope="module")
def registered(keys_api, keys, trained, workers, store):
    """Registered with a bearer key (tenant team-harness) and shared, so IAM callers may query it too."""
    model, data = trained
    validation = Path(model.path).with_suffix(".val.npz")
    from infaas.cli import digits

    validation.write_bytes(digits.validation_npz(data))
    body, content_type = _multipart(
        {"name": ARCH, "task": TASK, "accuracy": f"{model.val_accuracy:.4f}", "visibility": "shared"},
        {"file": ("model.onnx", Path(model.path).read_bytes()), "validation": ("validation.npz", validation.read_bytes())})
    owner = bearer(keys["query,register"])
    r = keys_api.request("POST", "/v1/models", headers={"Content-Type": content_type, **owner}, body=body)
    assert r.status == 201, (r.status, r.body)
    assert r.invocation is not None and r.json()["tenant"] == "team-harness"
    deadline = time.time() + READY_TIMEOUT_S
    while True:
        status = keys_api.request("GET", f"/v1/models/{ARCH}", headers=owner).json()
        if status["status"] in ("ready", "failed"):
            break
        for proc in workers.values():
            assert proc.poll() is None, tail(proc.log_path)
        assert time.time() < deadline, status
        time.sleep(0.5)
    assert status["status"] == "ready", status
    fp32 = next(v["id"] for v in status["variants"] if v["format"].endswith("fp32") and v["status"] == "ready")
    deadline = time.time() + 20
    while {w.id for w in store.workers()} != set(workers):
        assert time.time() < deadline
        time.sleep(0.2)
    return fp32


def _query(api, doc: dict, path: str = "/v1/infer"):
    r = api.request("POST", path, headers={"Content-Type": "application/json"}, body=json.dumps(doc).encode())
    assert r.status == 200, (r.status, r.body)
    return r


def test_queries_through_the_selector_match_scikit_learn(api, registered, trained):
    model, data = trained
    rows = data.x_test[:5]
    answer = _query(api, {"variant": registered, "inputs": rows.tolist()}).json()
    labels = next(t for t in answer["outputs"] if t["name"] == "label")
    assert labels["data"] == model.model.predict(rows).tolist()
    oip = {"inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}
    doc = _query(api, oip, f"/v2/models/{ARCH}/infer").json()
    assert next(t for t in doc["outputs"] if t["name"] == "label")["data"] == model.model.predict(rows).tolist()


def test_binary_bodies_follow_api_gateways_rules(api, functions, registered, trained):
    """Every body is binary to the stack's API (``*/*``): base64 in the event whatever its type, and a
    base64 answer is bytes for every client. With a narrower list, the defect it avoids: an OIP binary
    answer reaches a client whose first Accept type is not on the list as base64 text."""
    model, data = trained
    rows = np.asarray(data.x_test[:3], np.float32)
    event = api.event("POST", "/v1/infer", [("Content-Type", "application/json")], b"{}", "", "/v1/infer", None)
    assert event["isBase64Encoded"] and event["body"] == "e30="
    oip = {"inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}],
           "outputs": [{"name": "label", "parameters": {"binary_data": True}}]}
    body = json.dumps(oip).encode()
    expected = model.model.predict(rows).tolist()
    for gateway, accept, decoded in ((api, None, True), (api, "application/json", True),
                                     (ApiGateway(functions, binary_types=["application/octet-stream"]), "*/*", False),
                                     (ApiGateway(functions, binary_types=["application/octet-stream"]),
                                      "application/octet-stream", True)):
        headers = [("Content-Type", "application/json")] + ([("Accept", accept)] if accept else [])
        r = gateway.request("POST", f"/v2/models/{ARCH}/infer", body=body, headers=headers)
        assert r.status == 200, r.body
        length = int(r.header("Inference-Header-Content-Length"))
        if decoded:
            json.loads(r.body[:length])
            assert np.frombuffer(r.body[length:], np.int64).tolist() == expected, (gateway.binary_types, accept)
        else:  # base64 text where bytes were due
            assert r.body[:length] != r.body[:length].strip() or not r.body.startswith(b"{"), r.body[:40]
    too_big = api.request("POST", "/v1/infer", headers={"Content-Type": "application/octet-stream"},
                          body=b"\0" * (10 * 1024 * 1024 + 1))
    assert too_big.status == 413 and too_big.invocation is None
    over_lambda = api.request("POST", "/v1/infer", headers={"Content-Type": "application/octet-stream"},
                              body=b"\0" * (5 * 1024 * 1024))  # under API Gateway's 10 MB, over Lambda's 6 MB as base64
    assert over_lambda.status == 413 and over_lambda.invocation is None
    unrouted = api.request("GET", "/v3/anything")
    assert unrouted.status == 403 and unrouted.json() == {"message": "Missing Authentication Token"}


def test_tritonclient_against_the_api(functions, registered, trained):
    """The unmodified Triton HTTP client, through a loopback HTTP front that is API Gateway's rules
    in front of the built functions: live, ready, metadata, infer in JSON and in binary."""
    import tritonclient.http as triton

    model, data = trained
    rows = np.asarray(data.x_test[:4], np.float32)
    expected = model.model.predict(rows).tolist()
    with HttpFront(ApiGateway(functions)) as front:
        client = triton.InferenceServerClient(url=front.address, network_timeout=API_TIMEOUT_S + 5)
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_model_metadata(ARCH)
        assert meta["name"] == ARCH and [i["name"] for i in meta["inputs"]] == ["X"]
        for binary in (False, True):
            x = triton.InferInput("X", list(rows.shape), "FP32")
            x.set_data_from_numpy(rows, binary_data=binary)
            out = triton.InferRequestedOutput("label", binary_data=binary)
            result = client.infer(ARCH, [x], outputs=[out])
            assert result.as_numpy("label").tolist() == expected, binary
        client.close()


def test_a_bearer_key_works_end_to_end(keys_api, keys, registered, trained):
    """The key registered the model (``registered``); the same tenant's query-only key queries it in
    JSON and OIP, and ``tritonclient`` (JSON and binary) sends it in a header through the API-key API."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    model, data = trained
    rows = np.asarray(data.x_test[:4], np.float32)
    expected = model.model.predict(rows).tolist()
    key = bearer(keys["query"])
    r = keys_api.request("POST", "/v1/infer", headers={"Content-Type": "application/json", **key},
                         body=json.dumps({"variant": registered, "inputs": rows.tolist()}).encode())
    assert r.status == 200, (r.status, r.body)
    assert next(t for t in r.json()["outputs"] if t["name"] == "label")["data"] == expected
    with HttpFront(keys_api) as front:
        client = triton.InferenceServerClient(url=front.address, network_timeout=API_TIMEOUT_S + 5)
        assert client.is_server_live(headers=key) and client.is_server_ready(headers=key)
        assert client.get_model_metadata(ARCH, headers=key)["name"] == ARCH
        for binary in (False, True):
            x = triton.InferInput("X", list(rows.shape), "FP32")
            x.set_data_from_numpy(rows, binary_data=binary)
            out = triton.InferRequestedOutput("label", binary_data=binary)
            assert client.infer(ARCH, [x], outputs=[out], headers=key).as_numpy("label").tolist() == expected, binary
        with pytest.raises(InferenceServerException) as refused:
            client.infer(ARCH, [x], outputs=[out])  # no key: the gateway's 401, the authorizer not called
        assert refused.value.status() == "401"
        client.close()


def test_wrong_revoked_and_unscoped_keys(functions, keys_api, keys, registered, store, deployment, trained):
    """401 for a missing, malformed, unknown or wrong key; 403 (the app's, naming the scope) for a
    key without the route's scope; a revoked key answers until its cached authorization expires,
    then 401 -- within the authorizer's result TTL."""
    from infaas.app import identity

    _, data = trained
    doc = json.dumps({"variant": registered, "inputs": data.x_test[:1].tolist()}).encode()
    infer = lambda api, headers: api.request("POST", "/v1/infer", body=doc,  # noqa: E731
                                             headers={"Content-Type": "application/json", **headers})
    good = keys["query"]
    key_id, secret = good.split("_")[1], good.split("_", 2)[2]
    for headers in ({}, {"Authorization": good}, {"Authorization": f"Bearer infaas_{'f' * 16}_{secret}"},
                    {"Authorization": f"Bearer infaas_{key_id}_{'x' * len(secret)}"}):
        r = infer(keys_api, headers)
        assert r.status == 401 and r.json() == {"message": "Unauthorized"}, (headers, r.status, r.body)
    unscoped = infer(keys_api, bearer(keys["register"]))
    assert unscoped.status == 403 and "'query'" in unscoped.json()["message"], unscoped.body
    body, content_type = _multipart({"name": "not-allowed", "task": TASK, "accuracy": "0.9"},
                                    {"file": ("model.onnx", b"not a model")})
    r = keys_api.request("POST", "/v1/models", headers={"Content-Type": content_type, **bearer(good)}, body=body)
    assert r.status == 403 and "'register'" in r.json()["message"], r.body

    ttl = 2.0  # the stack caches 30 s (AUTHORIZER_TTL_S); a short one here, the same rules
    gateway = ApiGateway(functions, authorizer=functions["authorizer"], authorizer_ttl_s=ttl)
    doomed = tenant_key(deployment, "team-harness", "query")
    assert infer(gateway, bearer(doomed)).status == 200
    calls = gateway.authorizer_calls
    assert infer(gateway, bearer(doomed)).status == 200 and gateway.authorizer_calls == calls  # cached
    identity.revoke_key(store, doomed.split("_")[1])
    revoked_at = time.time()
    while infer(gateway, bearer(doomed)).status == 200:
        assert time.time() - revoked_at <= ttl, "a revoked key still works after the authorizer's TTL"
        time.sleep(0.2)
    assert infer(gateway, bearer(doomed)).status == 401
    assert infer(gateway, bearer(good)).status == 200  # the other keys are untouched


def _answers_from(api, doc: dict, n: int) -> list[dict]:
    return [_query(api, doc).json()["decision"] for _ in range(n)]


def test_a_drained_worker_serves_no_query_once_its_drain_is_recorded(registered, workers, store, trained,
                                                                     functions, deployment, tmp_path):
    """The drain is recorded in the table (the worker heartbeats ``draining`` on SIGUSR1, as the drain
    watcher sends it). From then on the worker refuses new queries (503 ``worker_draining``): a warm
    selector, frozen since its last query with a view that still has the worker up, sends a query
    there, hears the refusal and sends it to the other worker at once (no fault counted), and drops
    the worker from its view; a selector started after the drain routes nothing there. Every query
    is answered, none by the drained worker (each answer names the worker that served it, and the
    drained worker's own heartbeat says when its replicas last served)."""
    _, data = trained
    doc = {"variant": registered, "inputs": data.x_test[:1].tolist()}
    # a warm container of its own whose view is refreshed only every 600 s, so that it is still frozen
    # when the queries after the drain arrive, however long a busy machine takes to get there (the
    # shared one refreshes every second)
    shared = functions["selector"]
    warm = LambdaFunction("selector", shared.assets, {**shared.env, "INFAAS_SNAPSHOT_S": "600"},
                          tmp_path / "warm-selector.log")
    try:
        _drain_while_a_selector_is_warm(warm, functions, doc, workers, store, deployment, registered, data)
    finally:
        warm.kill()


def _drain_while_a_selector_is_warm(warm, functions, doc, workers, store, deployment, registered, data):
    from infaas.core import tensors

    api = ApiGateway({**functions, "selector": warm})
    drained = _answers_from(api, doc, 3)[-1]["worker"]  # where the warm selector sends queries now
    (other,) = set(workers) - {drained}
    log_before = len(warm.logs())
    workers[drained].send_signal(signal.SIGUSR1)  # what the drain watcher sends
    deadline = time.time() + 10
    while store.get_worker(drained).state != "draining":
        assert time.time() < deadline, tail(workers[drained].log_path)
        time.sleep(0.02)
    recorded = time.time()
    decisions = _answers_from(api, doc, 8)  # at once: the warm selector's view may still have it up
    assert [d["worker"] for d in decisions] == [other] * 8, decisions
    moved = [d for d in decisions if "draining" in d["reason"]]
    assert moved, "the warm selector never tried the drained worker: the refusal was not exercised"
    assert len(moved) == 1  # dropped from the view at the first refusal
    assert '"WorkerFaults"' not in warm.logs()[log_before:]  # a refusal to drain is not a fault
    fresh = LambdaFunction("selector", warm.assets, warm.env, warm.log_path)  # a container started now
    try:
        assert [d["worker"] for d in _answers_from(ApiGateway({**functions, "selector": fresh}), doc, 4)] == [other] * 4
    finally:
        fresh.kill()
    # the worker itself refuses a query sent straight to it (with the worker key, as a selector would)
    key = deployment.client("secretsmanager").get_secret_value(
        SecretId=deployment.env["INFAAS_WORKER_SECRET_ARN"])["SecretString"]
    direct = httpx.post(f"{store.get_worker(drained).url}/v1/infer/{registered}",
                        content=tensors.encode({"X": np.asarray(data.x_test[:1], np.float32)}),
                        headers={"x-infaas-worker-key": key, "content-type": tensors.CONTENT_TYPE}, timeout=10)
    assert direct.status_code == 503 and direct.json()["code"] == "worker_draining"
    time.sleep(1.2)  # a heartbeat or two of the drained worker: its replicas' last use, as it reports it
    assert all(r.last_used <= recorded for r in store.get_worker(drained).replicas), recorded
    stop_worker(workers[drained])
    assert drained not in {w.id for w in store.workers()}


@pytest.mark.parametrize("failure", ["refusing", "black-holing"])
def test_a_worker_whose_instance_is_gone_costs_a_retry_within_the_29_s_limit(api, registered, workers, store,
                                                                             trained, functions, failure):
    """The worker's record is still in the table (its heartbeat has not expired yet), but its
    instance is gone: its address refuses connections, or drops them (a socket that accepts and
    never answers). The query is retried on the other worker; the answer comes within 29 s."""
    _, data = trained
    (live,) = [w for w in store.workers() if w.id in workers and w.state == "up"]  # the one left after the drain
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    if failure == "refusing":
        sink.close()
    else:
        sink.listen(16)
    held = []
    gone_id = f"i-0gone{failure[:3]}"
    try:
        # Both workers hold the variant with nothing queued: the selector's options are equal, and the
        # first worker the table lists wins. The gone worker is given an id the table lists first.
        for k in "0123456789abcdefghijklmnopqrstuvwxyz":
            gone_id = f"i-0{k}gone{failure[:3]}"
            gone = dataclasses.replace(live, id=gone_id, url=f"http://127.0.0.1:{port}",
                                       memory_budget_bytes=live.memory_budget_bytes * 8, memory_used_bytes=0,
                                       heartbeat_at=time.time())
            store.heartbeat(gone, ttl_s=120)
            order = [w.id for w in store.workers() if w.id in (gone_id, live.id)]
            if order[0] == gone_id:
                break
            store.remove_worker(gone_id)
        assert order[0] == gone_id, order
        functions["selector"].kill()  # a new container: the gone worker is in its first snapshot, cold start included
        log_before = len(functions["selector"].logs())
        doc = {"variant": registered, "inputs": data.x_test[:1].tolist()}
        tried = False
        for _ in range(4):
            t0 = time.time()
            r = api.request("POST", "/v1/infer", headers={"Content-Type": "application/json"},
                            body=json.dumps(doc).encode())
            assert time.time() - t0 < API_TIMEOUT_S and r.status == 200, (r.status, r.body)
            assert r.json()["decision"]["worker"] == live.id
            tried = '"WorkerFaults"' in functions["selector"].logs()[log_before:]
            if tried:
                break
        assert tried, "the selector never chose the gone worker"
    finally:
        store.remove_worker(gone_id)
        sink.close()
        for c in held:
            c.close()


def test_the_autoscaler_function_runs_a_control_period(functions, deployment, registered, capsys):
    asg = deployment.client("autoscaling")
    ec2 = deployment.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    template = f"{deployment.prefix}-lt"
    ec2.create_launch_template(LaunchTemplateName=template, LaunchTemplateData={"ImageId": image,
                                                                                "InstanceType": "c6i.large"})
    asg.create_auto_scaling_group(AutoScalingGroupName=f"{deployment.prefix}-workers-cpu", MinSize=1, MaxSize=3,
                                  DesiredCapacity=1, LaunchTemplate={"LaunchTemplateName": template},
                                  AvailabilityZones=["us-east-1a"])
    event = {"version": "0", "id": "e1", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2025-01-01T00:00:00Z", "region": "us-east-1",
             "resources": [], "detail": {}}
    result = functions["autoscaler"].invoke(event)
    assert result.error is None, (result.error, functions["autoscaler"].logs()[-3000:])
    assert result.result["min_workers"] == {"cpu": 1} and result.result["max_workers"] == {"cpu": 3}
    assert result.cold and functions["autoscaler"].cold_starts[0]["init_s"] > 0
    with capsys.disabled():
        print(f"\nautoscaler cold import: {functions['autoscaler'].cold_starts[0]['init_s']:.3f} s")
