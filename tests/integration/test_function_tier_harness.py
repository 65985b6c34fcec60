"""The serverless CPU tier through the functions as deployed (``lambda_harness``), on moto: a registered
CPU model, a fleet at zero, and the selector function answering from the inference function.

The frontend and the selector run from the built functions' layer, the inference function from its own
(onnxruntime and numpy, ``layers/build.py build_inference``), each in Lambda's Python with only its
artefacts on its path, frozen between invocations. The selector's boto3 Lambda client is pointed
(``AWS_ENDPOINT_URL_LAMBDA``) at ``LambdaService``, a loopback server implementing Lambda's Invoke call
by running the inference function's environment; everything else (DynamoDB, S3, SQS, Secrets Manager)
is the moto server.

One worker process builds the model (CPU and ``lambda`` variants: the latter profiled as a function
at each memory size) and leaves; with no worker up, the first query is answered by the tier, cold,
within its objective plus the cold start the function reported; the next one warm.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from aws_support import start_worker, stop_worker, tail
from lambda_harness import (
    ApiGateway,
    LambdaFunction,
    LambdaService,
    build_assets,
    build_inference_assets,
)

from infaas.cli import digits

ARCH = "digits-tier"
TASK = "classification/digits-tier"
READY_TIMEOUT_S = 240.0
SIZES = (512, 1024, 1769, 3008)  # cdk/infaas_cdk/config.py TIER_MEMORY_MB
OBJECTIVE_MS = 3000.0  # above the profiled cold start: the tier is chosen although it starts cold
STACK_ENV = {"INFAAS_MAX_BODY_BYTES": str(5 << 20), "POWERTOOLS_METRICS_NAMESPACE": "Infaas",
             "POWERTOOLS_LOG_LEVEL": "INFO", "INFAAS_BUILD_HARDWARE": "cpu,lambda"}


def _name(mb: int) -> str:
    return f"infaas-inference-{mb}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = digits.split()
    (model,) = digits.train(str(tmp_path_factory.mktemp("models")), names=["logistic-regression"], data=data)
    return model, data


@pytest.fixture(scope="module")
def stack(deployment, tmp_path_factory):
    """The frontend and the selector behind the IAM API, the inference functions behind ``LambdaService``."""
    work = tmp_path_factory.mktemp("tier-assets")
    logs = tmp_path_factory.mktemp("tier-logs")
    assets = build_assets(work / "api", names=("frontend", "selector"))
    inference = build_inference_assets(work / "inference")
    base = {k: v for k, v in deployment.env.items() if not k.startswith("POWERTOOLS_")}
    creds = {k: base[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                  "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL")}
    # what cdk/infaas_cdk/tier.py gives each size: the bucket, a /tmp of its own
    tier_fns = {_name(mb): LambdaFunction("inference", inference,
                                          {**creds, "INFAAS_BUCKET": deployment.bucket,
                                           "INFAAS_MODEL_CACHE_DIR": str(logs / f"tmp-{mb}" / "infaas-models"),
                                           "POWERTOOLS_SERVICE_NAME": "infaas-inference"},
                                          logs / f"inference-{mb}.log", memory_mb=mb)
                for mb in SIZES}
    service = LambdaService(tier_fns).__enter__()
    # what cdk/infaas_cdk/functions.py gives the selector with the tier on
    tier_env = {"INFAAS_FUNCTION_TIER": "on", "INFAAS_FUNCTION_NAMES": json.dumps({str(mb): _name(mb) for mb in SIZES}),
                "INFAAS_FUNCTION_CONCURRENCY": "10", "AWS_ENDPOINT_URL_LAMBDA": service.url}
    fns = {"frontend": LambdaFunction("frontend", assets, {**base, **STACK_ENV}, logs / "frontend.log", memory_mb=2048),
           "selector": LambdaFunction("selector", assets, {**base, **STACK_ENV, "INFAAS_SNAPSHOT_S": "1.0", **tier_env},
                                      logs / "selector.log")}
    try:
        yield ApiGateway(fns), service, fns, tier_fns
    finally:
        service.__exit__(None, None, None)
        for fn in (*fns.values(), *tier_fns.values()):
            fn.kill()


@pytest.fixture(scope="module")
def store(deployment):
    from infaas.adapters.aws.dynamodb import DynamoItemTable
    from infaas.app.store import MetadataStore

    return MetadataStore(DynamoItemTable(deployment.table, client=deployment.client("dynamodb")))


@pytest.fixture(scope="module")
def registered(stack, trained, deployment, store, tmp_path_factory):
    """Registered through the frontend; built by one worker, which then leaves: the fleet is at zero."""
    api = stack[0]
    model, data = trained
    validation = digits.validation_npz(data)
    request = httpx.Request("POST", "http://upload.invalid/", data={
        "name": ARCH, "task": TASK, "accuracy": f"{model.val_accuracy:.4f}"},
        files={"file": ("model.onnx", Path(model.path).read_bytes()), "validation": ("validation.npz", validation)})
    r = api.request("POST", "/v1/models", headers={"Content-Type": request.headers["content-type"]}, body=request.read())
    assert r.status == 201, (r.status, r.body)
    worker = start_worker({**deployment.env, "INFAAS_BUILD_HARDWARE": "cpu,lambda"},
                          tmp_path_factory.mktemp("tier-worker"), "i-0tierbuilder")
    try:
        deadline = time.time() + READY_TIMEOUT_S
        while True:
            variants = store.variants_of(ARCH)
            fns = [v for v in variants if v.hardware == "lambda"]
            if fns and all(v.status in ("ready", "failed", "skipped") for v in variants):
                break
            assert worker.poll() is None, tail(worker.log_path)
            assert time.time() < deadline, [(v.id, v.status) for v in variants]
            time.sleep(0.5)
    finally:
        stop_worker(worker)
    ready = [v for v in fns if v.status == "ready"]
    assert ready, [(v.id, v.status, v.message) for v in fns]
    deadline = time.time() + 20
    while store.workers():  # deregistered (or expired): nothing of the fleet is left
        assert time.time() < deadline, store.workers()
        time.sleep(0.2)
    return ready


def test_with_the_fleet_at_zero_the_first_query_is_answered_by_the_tier(stack, registered, trained, capsys):
    api, service, _, tier_fns = stack
    model, data = trained
    rows = data.x_test[:4]
    doc = {"architecture": ARCH, "inputs": rows.tolist(), "objective": {"latency_ms": OBJECTIVE_MS}}

    first = api.request("POST", "/v1/infer", headers={"Content-Type": "application/json"}, body=json.dumps(doc).encode())
    assert first.status == 200, (first.status, first.body)
    a = first.json()
    d = a["decision"]
    assert d["worker"] == "lambda" and d["variant"].endswith(":lambda:b8") and d["loaded"] is False, d
    assert next(t for t in a["outputs"] if t["name"] == "label")["data"] == model.model.predict(rows).tolist()
    name, event, invocation = service.calls[-1]
    chosen = next(v for v in registered if v.id == d["variant"])
    assert name == _name(chosen.profile.memory_mb) and event["variant_id"] == d["variant"]
    assert event["model_key"] == chosen.model_key
    reported = invocation.result
    assert invocation.cold and reported["cold"] is True and reported["environment_cold"] is True
    # the cold start as Lambda would report it: the environment's init (runtime start and the handler's imports,
    # the harness's Init Duration) plus what the handler spent loading the model (download, session)
    cold_ms = invocation.init_s * 1000 + reported["download_ms"] + reported["load_ms"]
    assert a["latency_ms"] <= OBJECTIVE_MS + cold_ms, (a["latency_ms"], cold_ms)

    second = api.request("POST", "/v1/infer", headers={"Content-Type": "application/json"}, body=json.dumps(doc).encode())
    assert second.status == 200, (second.status, second.body)
    b = second.json()
    assert b["decision"]["worker"] == "lambda" and b["decision"]["loaded"] is True, b["decision"]
    assert b["decision"]["variant"] == d["variant"]
    assert next(t for t in b["outputs"] if t["name"] == "label")["data"] == model.model.predict(rows).tolist()
    _, _, warm = service.calls[-1]
    assert not warm.cold and warm.result["cold"] is False and warm.result["init_ms"] == 0.0
    assert b["latency_ms"] <= OBJECTIVE_MS
    with capsys.disabled():
        print(f"\ntier through the harness ({chosen.profile.memory_mb} MB; profiled cold start "
              f"{chosen.profile.load_ms:.0f} ms): cold answer {a['latency_ms']:.1f} ms (init {invocation.init_s * 1000:.0f}"
              f" ms, download {reported['download_ms']:.1f}, load {reported['load_ms']:.1f}, run {reported['run_ms']:.3f});"
              f" warm answer {b['latency_ms']:.1f} ms (run {warm.result['run_ms']:.3f} ms); "
              f"predicted cold {d['predicted_latency_ms']:.0f} ms, warm {b['decision']['predicted_latency_ms']:.1f} ms")

