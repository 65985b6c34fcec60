"""The AWS deployment end to end, offline: Lambda handlers in-process, a real
worker process, DynamoDB, S3 and SQS on a moto server.

register (frontend handler, multipart through API Gateway)
  -> build job on SQS -> worker process builds and profiles -> profiles in DynamoDB
  -> query (selector handler) -> dispatched to that worker over loopback
  -> the answer equals what the local stack serves for the same variant and input.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from aws_support import LambdaContext, json_body, load_function, rest_event

ARCH = "digits-logreg"
READY_TIMEOUT_S = 150.0


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://upload.invalid/", data=fields, files=files)
    return request.read(), request.headers["content-type"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    from infaas.cli import digits

    data = digits.split()
    folder = tmp_path_factory.mktemp("models")
    (model,) = digits.train(str(folder), names=["logistic-regression"], data=data)
    validation = folder / "validation.npz"
    validation.write_bytes(digits.validation_npz(data))
    return model, data, validation


@pytest.fixture(scope="module")
def frontend(deployment):
    return load_function("frontend")


@pytest.fixture(scope="module")
def selector(deployment):
    return load_function("selector")


@pytest.fixture(scope="module")
def worker(deployment, tmp_path_factory: pytest.TempPathFactory):
    """``python -m infaas.worker`` on loopback, configured as a worker machine
    is (``/etc/infaas/worker.env``), against the moto server."""
    from infaas.adapters.local.processes import free_port

    port = free_port()
    data_dir = tmp_path_factory.mktemp("worker")
    env = {
        **os.environ,
        **deployment.env,
        "INFAAS_HOST": "127.0.0.1",
        "INFAAS_DATA_DIR": str(data_dir),
        "INFAAS_MODEL_CACHE_DIR": str(data_dir / "cache"),
        "INFAAS_HEARTBEAT_S": "0.5",
        "INFAAS_QUEUE_WAIT_S": "1",
        "OMP_NUM_THREADS": "1",
    }
    log = open(data_dir / "worker.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "infaas.worker", "--hardware", "cpu", "--port", str(port), "--worker-id", "i-0worker1"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    proc.log_path = data_dir / "worker.log"
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


@pytest.fixture(scope="module")
def registered(frontend, trained, worker):
    model, _data, validation = trained
    body, content_type = multipart(
        {"name": ARCH, "task": "classification/digits", "accuracy": f"{model.val_accuracy:.4f}"},
        {"file": ("model.onnx", Path(model.path).read_bytes()), "validation": ("validation.npz", validation.read_bytes())},
    )
    response = frontend.handler(rest_event("POST", "/v1/models", body=body, headers={"content-type": content_type}),
                                LambdaContext())
    assert response["statusCode"] == 201, response
    created = json_body(response)
    deadline = time.time() + READY_TIMEOUT_S
    while True:
        status = json_body(frontend.handler(rest_event("GET", f"/v1/models/{ARCH}"), LambdaContext()))
        if status["status"] in ("ready", "failed"):
            break
        assert worker.poll() is None, f"worker exited:\n{_tail(worker.log_path)}"
        assert time.time() < deadline, f"not ready after {READY_TIMEOUT_S} s: {status}\n{_tail(worker.log_path)}"
        time.sleep(0.5)
    assert status["status"] == "ready", status
    return created, status


def test_registration_queued_a_build_job_per_variant_plan(registered):
    created, _ = registered
    assert created["name"] == ARCH
    variants = created["variants"]
    assert variants and {v["hardware"] for v in variants} == {"cpu"}  # INFAAS_BUILD_HARDWARE=cpu
    assert any(v["format"].endswith("fp32") for v in variants)


def test_worker_wrote_profiles_to_dynamodb(registered, deployment):
    from infaas.adapters.aws.dynamodb import DynamoItemTable
    from infaas.app.store import MetadataStore

    store = MetadataStore(DynamoItemTable(deployment.table, client=deployment.client("dynamodb")))
    fp32 = store.get_variant(_fp32_id(registered))
    assert fp32.status == "ready" and fp32.accuracy_measured
    assert fp32.profile is not None and fp32.profile.hardware == "cpu"
    assert fp32.profile.latency_at(1) > 0
    # the variant file went to S3, and the build job left its queue
    assert deployment.client("s3").head_object(Bucket=deployment.bucket, Key=fp32.model_key)["ContentLength"] > 0
    sqs = deployment.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=deployment.lanes[f"{deployment.queue_prefix}build-cpu"],
                                          AttributeNames=["ApproximateNumberOfMessages",
                                                          "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    (worker,) = store.workers()
    assert worker.id == "i-0worker1" and worker.url.startswith("http://127.0.0.1:")


def _fp32_id(registered) -> str:
    _, status = registered
    return next(v["id"] for v in status["variants"] if v["format"].endswith("fp32") and v["status"] == "ready")


def _infer(selector, doc: dict) -> dict:
    response = selector.handler(rest_event("POST", "/v1/infer", body=json.dumps(doc),
                                           headers={"content-type": "application/json"}), LambdaContext())
    assert response["statusCode"] == 200, response
    return json_body(response)


def _local_answer(variant_id: str, deployment, original_path: str, rows: np.ndarray, tmp_path: Path) -> dict[str, np.ndarray]:
    """What the local stack serves for this variant: the same builder, the same executor."""
    from infaas.adapters.aws.dynamodb import DynamoItemTable
    from infaas.app.store import MetadataStore
    from infaas.runtime.executor import load_executor
    from infaas.runtime.generate import build_variant

    variant = MetadataStore(DynamoItemTable(deployment.table, client=deployment.client("dynamodb"))).get_variant(variant_id)
    path = tmp_path / "variant.onnx"
    path.write_bytes(build_variant(variant, original_path))
    executor = load_executor(variant, str(path))
    return executor.run({executor.input_names[0]: rows})


def _outputs(doc: dict) -> dict[str, np.ndarray]:
    return {t["name"]: np.asarray(t["data"]).reshape(t["shape"]) for t in doc["outputs"]}


def _eventually(selector, doc: dict, timeout_s: float = 20.0) -> dict:
    """The selector refreshes its cluster view every few hundred ms: retry 503s briefly."""
    deadline = time.time() + timeout_s
    while True:
        response = selector.handler(rest_event("POST", "/v1/infer", body=json.dumps(doc),
                                               headers={"content-type": "application/json"}), LambdaContext())
        if response["statusCode"] == 200 or time.time() > deadline:
            assert response["statusCode"] == 200, response
            return json_body(response)
        time.sleep(0.2)


@pytest.mark.parametrize("named", ["fp32 variant", "task"])
def test_query_through_the_selector_is_served_by_the_worker(registered, selector, deployment, trained, tmp_path, named,
                                                            capsys):
    model, data, _ = trained
    rows = data.x_test[:8]
    target = {"variant": _fp32_id(registered)} if named == "fp32 variant" else {"task": "classification/digits"}
    answer = _eventually(selector, {**target, "inputs": rows.tolist(), "objective": {"latency_ms": 1000}})
    assert answer["decision"]["worker"] == "i-0worker1"
    got = _outputs(answer)
    expected = _local_answer(answer["decision"]["variant"], deployment, model.path, rows, tmp_path)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].tolist() == value.tolist(), name  # exactly the local stack's answer
    if answer["decision"]["variant"].split(":")[1].endswith("fp32"):  # and scikit-learn's own labels
        assert got["label"].tolist() == model.model.predict(rows).tolist()
    # one EMF metric line per answer, per hardware type
    from infaas.adapters.aws.metrics import DIMENSIONS

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"CloudWatchMetrics"' in line]
    emf = [d for d in lines if "QueryLatency" in d]
    assert emf and emf[-1]["Hardware"] == "cpu" and emf[-1]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Infaas"
    for d in lines:  # exactly the dimensions the alarms read (tests/infrastructure: every alarm's series exists)
        (spec,) = d["_aws"]["CloudWatchMetrics"]
        (metric,) = spec["Metrics"]
        assert spec["Dimensions"] == [list(DIMENSIONS[metric["Name"]])] and "service" not in d, d


def test_the_worker_answers_only_callers_with_the_worker_key(registered, selector, worker, deployment, trained):
    """The selector (above) reads the key from Secrets Manager and is served; a caller that reaches
    the worker's port in the VPC without it gets 401 and nothing runs."""
    from infaas.core import tensors

    _model, data, _ = trained
    from infaas.adapters.aws.dynamodb import DynamoItemTable
    from infaas.app.store import MetadataStore

    store = MetadataStore(DynamoItemTable(deployment.table, client=deployment.client("dynamodb")))
    url = store.get_worker("i-0worker1").url
    frame = tensors.encode({"X": np.asarray(data.x_test[:1], np.float32)})
    key = deployment.client("secretsmanager").get_secret_value(SecretId=deployment.env["INFAAS_WORKER_SECRET_ARN"])
    for headers in ({}, {"x-infaas-worker-key": "guess"}):
        r = httpx.post(f"{url}/v1/infer/{_fp32_id(registered)}", content=frame,
                       headers={"content-type": tensors.CONTENT_TYPE, **headers})
        assert r.status_code == 401 and r.json()["field"] == "key", r.text
    r = httpx.post(f"{url}/v1/infer/{_fp32_id(registered)}", content=frame,
                   headers={"content-type": tensors.CONTENT_TYPE, "x-infaas-worker-key": key["SecretString"]})
    assert r.status_code == 200, r.text
    assert set(httpx.get(f"{url}/health").json()) == {"state"}


def test_open_inference_protocol_through_the_selector(registered, selector, trained):
    model, data, _ = trained
    rows = data.x_test[8:10]
    body = {"inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}],
            "parameters": {"latency_ms": 1000}}
    response = selector.handler(rest_event("POST", f"/v2/models/{ARCH}/infer", body=json.dumps(body),
                                           headers={"content-type": "application/json"}), LambdaContext())
    assert response["statusCode"] == 200, response
    doc = json_body(response)
    labels = next(t for t in doc["outputs"] if t["name"] == "label")["data"]
    assert labels == model.model.predict(rows).tolist()


def test_large_model_registers_through_a_presigned_upload(registered, frontend, trained):
    model, _, _ = trained
    response = frontend.handler(rest_event("POST", "/v1/uploads"), LambdaContext())
    assert response["statusCode"] == 201, response
    upload = json_body(response)
    assert upload["max_bytes"] > 6 << 20  # more than a Lambda request can carry
    target = upload["model"]
    put = httpx.post(target["url"], data=target["fields"], files={"file": ("model.onnx", Path(model.path).read_bytes())})
    assert put.status_code in (200, 201, 204), put.text
    # the same file under the same name: registration is idempotent (200, no new build)
    register = {"name": ARCH, "task": "classification/digits", "accuracy": round(model.val_accuracy, 4)}
    response = frontend.handler(
        rest_event("POST", f"/v1/uploads/{upload['upload_id']}/register", body=json.dumps(register),
                   headers={"content-type": "application/json"}), LambdaContext())
    assert response["statusCode"] == 200, response
    assert json_body(response)["status"] == "ready"
    # the upload is consumed; registering it again says so
    again = frontend.handler(
        rest_event("POST", f"/v1/uploads/{upload['upload_id']}/register", body=json.dumps(register),
                   headers={"content-type": "application/json"}), LambdaContext())
    assert again["statusCode"] == 404 and json_body(again)["field"] == "upload_id"


def test_catalogue_and_workers_through_the_frontend(registered, frontend):
    models = json_body(frontend.handler(rest_event("GET", "/v1/models"), LambdaContext()))["models"]
    assert [m["name"] for m in models] == [ARCH]
    workers = json_body(frontend.handler(rest_event("GET", "/v1/workers"), LambdaContext()))["workers"]
    assert [w["id"] for w in workers] == ["i-0worker1"]


def test_drained_worker_is_no_longer_selected(registered, selector, worker, deployment, trained):
    """SIGUSR1 (what the drain watcher sends before the instance terminates):
    the worker reports 'draining' and the selector stops choosing it."""
    from infaas.adapters.aws.dynamodb import DynamoItemTable
    from infaas.app.store import MetadataStore

    store = MetadataStore(DynamoItemTable(deployment.table, client=deployment.client("dynamodb")))
    worker.send_signal(signal.SIGUSR1)
    deadline = time.time() + 10
    while store.get_worker("i-0worker1").state != "draining":
        assert time.time() < deadline, _tail(worker.log_path)
        time.sleep(0.1)
    _, data, _ = trained
    doc = {"architecture": ARCH, "inputs": data.x_test[:1].tolist()}
    deadline = time.time() + 10
    while True:
        response = selector.handler(rest_event("POST", "/v1/infer", body=json.dumps(doc),
                                               headers={"content-type": "application/json"}), LambdaContext())
        if response["statusCode"] != 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert response["statusCode"] in (422, 503), response  # no worker up to serve it
    worker.send_signal(signal.SIGTERM)
    worker.wait(20)
    assert worker.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a graceful shutdown
    assert store.workers() == []  # it deregistered on the way out
