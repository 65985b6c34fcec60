"""The functions as deployed (``lambda_harness``): built layer and staged code, Lambda's Python,
frozen between invocations, behind API Gateway's REST proxy rules, on a moto server.

register (frontend, multipart: base64 in the event) -> two worker processes take the build job
-> queries through the selector (JSON, OIP, tritonclient in JSON and binary through a loopback
HTTP front) -> one worker drained -> no query reaches it once its drain is recorded -> workers
whose instance is gone (refusing, or black-holing connections) cost a retry, and the answer
still comes within API Gateway's 29 s -> the autoscaler function runs one control period.

Each function's cold import is measured and printed (``docs/aws.md``: cold starts).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
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
    }
    try:
        yield fns
    finally:
        for fn in fns.values():
            fn.kill()


@pytest.fixture(scope="module")
def api(functions):
    return ApiGateway(functions)


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


def test_each_function_starts_from_the_built_artefacts_only(functions, assets, capsys):
    """Every function's cold start, in Lambda's interpreter with nothing but its assets on the path;
    the selector loads no control plane: no registration (onnx, python-multipart's parser), no
    offline jobs, no Prometheus, no documentation pages."""
    figures = {}
    for name in ("frontend", "selector"):
        r = ApiGateway(functions).request("GET", "/v2/health/live" if name == "selector" else "/v1/tasks")
        assert r.status == 200, (name, r.status, r.body, functions[name].logs()[-2000:])
        assert r.invocation.cold
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
def registered(api, trained, workers, store):
    model, data = trained
    validation = Path(model.path).with_suffix(".val.npz")
    from infaas.cli import digits

    validation.write_bytes(digits.validation_npz(data))
    body, content_type = _multipart(
        {"name": ARCH, "task": TASK, "accuracy": f"{model.val_accuracy:.4f}"},
        {"file": ("model.onnx", Path(model.path).read_bytes()), "validation": ("validation.npz", validation.read_bytes())})
    r = api.request("POST", "/v1/models", headers={"Content-Type": content_type}, body=body)
    assert r.status == 201, (r.status, r.body)
    assert r.invocation is not None
    deadline = time.time() + READY_TIMEOUT_S
    while True:
        status = api.request("GET", f"/v1/models/{ARCH}").json()
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


def _answers_from(api, doc: dict, n: int) -> list[str]:
    return [_query(api, doc).json()["decision"]["worker"] for _ in range(n)]


def test_a_drained_worker_gets_no_query_once_its_drain_is_seen(api, registered, workers, store, trained, functions):
    """The drain is recorded in the table (the worker heartbeats ``draining`` on SIGUSR1, as the drain
    watcher sends it). A selector container started after that routes nothing to it; a warm one,
    frozen since its last query, decides on a view at most ``INFAAS_SNAPSHOT_S`` old, so after that
    period nothing reaches the drained worker either (before it, the worker still serves: it keeps
    serving until it is stopped, ``drain_s`` = 5 s later)."""
    _, data = trained
    doc = {"variant": registered, "inputs": data.x_test[:1].tolist()}
    _answers_from(api, doc, 2)  # a warm selector with a snapshot
    warm = functions["selector"]
    drained = "i-0first"
    workers[drained].send_signal(signal.SIGUSR1)  # what the drain watcher sends
    deadline = time.time() + 10
    while store.get_worker(drained).state != "draining":
        assert time.time() < deadline, tail(workers[drained].log_path)
        time.sleep(0.05)
    recorded = time.time()
    fresh = LambdaFunction("selector", warm.assets, warm.env, warm.log_path)  # a container started now
    try:
        served = _answers_from(ApiGateway({**functions, "selector": fresh}), doc, 6)
    finally:
        fresh.kill()
    assert served == ["i-0second"] * 6
    time.sleep(float(warm.env["INFAAS_SNAPSHOT_S"]))  # the warm container's view may be this old
    seen = time.time()
    assert _answers_from(api, doc, 6) == ["i-0second"] * 6
    time.sleep(1.2)  # a heartbeat or two of the drained worker: its replicas' last use, as it reports it
    assert all(r.last_used <= seen for r in store.get_worker(drained).replicas), recorded
    stop_worker(workers[drained])
    assert drained not in {w.id for w in store.workers()}


@pytest.mark.parametrize("failure", ["refusing", "black-holing"])
def test_a_worker_whose_instance_is_gone_costs_a_retry_within_the_29_s_limit(api, registered, workers, store,
                                                                             trained, functions, failure):
    """The worker's record is still in the table (its heartbeat has not expired yet), but its
    instance is gone: its address refuses connections, or drops them (a socket that accepts and
    never answers). The query is retried on the other worker; the answer comes within 29 s."""
    _, data = trained
    live = store.get_worker("i-0second")
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    if failure == "refusing":
        sink.close()
    else:
        sink.listen(16)
    held = []
    try:
        gone = dataclasses.replace(live, id=f"i-0gone{failure[:3]}", url=f"http://127.0.0.1:{port}",
                                   memory_budget_bytes=live.memory_budget_bytes * 8, memory_used_bytes=0,
                                   heartbeat_at=time.time())
        store.heartbeat(gone, ttl_s=120)
        functions["selector"].kill()  # a new container: the gone worker is in its first snapshot, cold start included
        log_before = len(functions["selector"].logs())
        doc = {"variant": registered, "inputs": data.x_test[:1].tolist()}
        tried = False
        for _ in range(4):
            t0 = time.time()
            r = api.request("POST", "/v1/infer", headers={"Content-Type": "application/json"},
                            body=json.dumps(doc).encode())
            assert time.time() - t0 < API_TIMEOUT_S and r.status == 200, (r.status, r.body)
            assert r.json()["decision"]["worker"] == "i-0second"
            tried = '"WorkerFaults"' in functions["selector"].logs()[log_before:]
            if tried:
                break
        assert tried, "the selector never chose the gone worker"
    finally:
        store.remove_worker(f"i-0gone{failure[:3]}")
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
