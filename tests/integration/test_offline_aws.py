"""Offline jobs on the AWS adapters: inputs in S3, items through SQS, outputs
to S3, processed by a real worker process (moto server on loopback)."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import onnxruntime as ort
from aws_support import LambdaContext, json_body, rest_event
from test_lambda_flow import frontend, registered, trained, worker  # noqa: F401  (shared module fixtures)

from infaas.core.keys import tenant_folder

N_FILES = 20
# INFAAS_OFFLINE_S3_ROOT (conftest) / the caller's area: the IAM user "tester" is the tenant
# iam:123456789012:user/tester, whose area is named by a digest (infaas.core.keys.tenant_folder)
AREA = "offline/" + tenant_folder("iam:123456789012:user/tester")


def test_job_reads_s3_runs_on_the_worker_and_writes_s3(registered, frontend, trained, deployment):  # noqa: F811
    model, data, _ = trained
    s3 = deployment.client("s3")
    rows = data.x_test[: N_FILES * 3].reshape(N_FILES, 3, 64)
    for i in range(N_FILES):
        buf = io.BytesIO()
        np.save(buf, rows[i])
        s3.put_object(Bucket=deployment.bucket, Key=f"{AREA}/in/x{i:02d}.npy", Body=buf.getvalue())
    job = {"input": f"s3://{deployment.bucket}/{AREA}/in", "output": f"s3://{deployment.bucket}/{AREA}/out",
           "architecture": "digits-logreg", "objective": {"min_accuracy": 0.5}}
    response = frontend.handler(rest_event("POST", "/v1/jobs", body=json.dumps(job),
                                           headers={"content-type": "application/json"}), LambdaContext())
    assert response["statusCode"] == 201, response
    submitted = json_body(response)
    # the API call reads no input: the job is recorded and one expand message queued; a worker makes the items
    assert submitted["state"] == "queued" and submitted["items"] == 0, submitted
    deadline = time.time() + 120
    while True:
        status = json_body(frontend.handler(rest_event("GET", f"/v1/jobs/{submitted['id']}"), LambdaContext()))
        if status["state"] not in ("queued", "running") or time.time() > deadline:
            break
        time.sleep(0.5)
    assert status["state"] == "done" and status["done"] == N_FILES, status
    assert status["items"] == N_FILES and status["rows"] == 3 * N_FILES

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=deployment.bucket, Prefix=f"{AREA}/out/")["Contents"])
    assert keys == [f"{AREA}/out/x{i:02d}.out.npz" for i in range(N_FILES)]  # each exactly once
    variant = status["variant"]
    body = json_body(frontend.handler(rest_event("GET", "/v1/models/digits-logreg"), LambdaContext()))
    model_key = next(v for v in body["variants"] if v["id"] == variant)
    # the variant file the worker ran, straight from S3, run by onnxruntime directly
    item = deployment.client("dynamodb").get_item(
        TableName=deployment.table, Key={"pk": {"S": "ARCH#digits-logreg"}, "sk": {"S": f"V#{variant}"}})
    key = json.loads(item["Item"]["body"]["S"])["model_key"]
    sess = ort.InferenceSession(s3.get_object(Bucket=deployment.bucket, Key=key)["Body"].read(),
                                providers=["CPUExecutionProvider"])
    for i in range(N_FILES):
        got = np.load(io.BytesIO(s3.get_object(Bucket=deployment.bucket, Key=keys[i])["Body"].read()))
        want = sess.run(None, {sess.get_inputs()[0].name: rows[i].astype(np.float32)})
        np.testing.assert_array_equal(got["label"], want[0])
        np.testing.assert_array_equal(got["label"], model.model.predict(rows[i]))
    assert model_key["status"] == "ready"


def test_a_job_outside_the_tenants_s3_area_is_refused(registered, frontend, deployment):  # noqa: F811
    for where in (f"s3://{deployment.bucket}/offline/someone-else/in", f"s3://{deployment.bucket}/models",
                  f"s3://{deployment.bucket}/{AREA}/../someone-else/in", f"s3://another-bucket/{AREA}/in",
                  f"s3://{deployment.bucket}/offline/tester/in"):  # the name alone is another (key) tenant's area
        job = {"input": where, "output": f"s3://{deployment.bucket}/{AREA}/out", "architecture": "digits-logreg"}
        response = frontend.handler(rest_event("POST", "/v1/jobs", body=json.dumps(job),
                                               headers={"content-type": "application/json"}), LambdaContext())
        assert response["statusCode"] == 403, (where, response)
        assert json_body(response)["field"] == "location"
        assert json_body(response)["error"].startswith("input: location "), json_body(response)
    job = {"input": f"s3://{deployment.bucket}/{AREA}/in", "output": f"s3://{deployment.bucket}/offline/other/out",
           "architecture": "digits-logreg"}
    response = frontend.handler(rest_event("POST", "/v1/jobs", body=json.dumps(job),
                                           headers={"content-type": "application/json"}), LambdaContext())
    assert response["statusCode"] == 403 and json_body(response)["error"].startswith("output: location ")


def _put_inputs(deployment, folder: str, arrays) -> None:
    s3 = deployment.client("s3")
    for i, rows in enumerate(arrays):
        buf = io.BytesIO()
        np.save(buf, rows)
        s3.put_object(Bucket=deployment.bucket, Key=f"{AREA}/{folder}/x{i:02d}.npy", Body=buf.getvalue())


def _submit(frontend, job, **headers):  # noqa: F811
    return frontend.handler(rest_event("POST", "/v1/jobs", body=json.dumps(job),
                                       headers={"content-type": "application/json", **headers}), LambdaContext())


def _settle(frontend, job_id):  # noqa: F811
    deadline = time.time() + 120
    while True:
        status = json_body(frontend.handler(rest_event("GET", f"/v1/jobs/{job_id}"), LambdaContext()))
        if status["state"] not in ("queued", "running") or time.time() > deadline:
            return status
        time.sleep(0.3)


def test_a_retried_submission_with_the_same_key_is_the_same_job(registered, frontend, trained, deployment):  # noqa: F811
    _, data, _ = trained
    _put_inputs(deployment, "idem", [data.x_test[:2], data.x_test[2:4]])
    job = {"input": f"s3://{deployment.bucket}/{AREA}/idem", "output": f"s3://{deployment.bucket}/{AREA}/idem-out",
           "architecture": "digits-logreg"}
    first = _submit(frontend, job, **{"Idempotency-Key": "nightly-2026-12-05"})
    again = _submit(frontend, job, **{"Idempotency-Key": "nightly-2026-12-05"})
    assert first["statusCode"] == again["statusCode"] == 201
    assert json_body(first)["id"] == json_body(again)["id"]
    other = _submit(frontend, job, **{"Idempotency-Key": "nightly-2026-12-06"})
    assert json_body(other)["id"] != json_body(first)["id"]
    listed = json_body(frontend.handler(rest_event("GET", "/v1/jobs"), LambdaContext()))["jobs"]
    assert sum(j["id"] == json_body(first)["id"] for j in listed) == 1
    assert _settle(frontend, json_body(first)["id"])["state"] == "done"
    bad_key = _submit(frontend, job, **{"Idempotency-Key": "x" * 129})
    assert bad_key["statusCode"] == 400 and json_body(bad_key)["field"] == "idempotency_key"


def test_a_job_that_cannot_be_expanded_ends_failed_with_its_reason(registered, frontend, trained, deployment):  # noqa: F811
    _, data, _ = trained
    _put_inputs(deployment, "bad", [data.x_test[:2], np.zeros((2, 7), np.float32)])  # the second has 7 columns
    job = {"input": f"s3://{deployment.bucket}/{AREA}/bad", "output": f"s3://{deployment.bucket}/{AREA}/bad-out",
           "architecture": "digits-logreg"}
    response = _submit(frontend, job)
    assert response["statusCode"] == 201 and json_body(response)["state"] == "queued"
    status = _settle(frontend, json_body(response)["id"])
    assert status["state"] == "failed" and "x01.npy" in status["error"], status
    assert status["items"] == 0 and status["left"] == 0  # no item was made: nothing is left running
    empty = _submit(frontend, {**job, "input": f"s3://{deployment.bucket}/{AREA}/nothing-here"})
    status = _settle(frontend, json_body(empty)["id"])
    assert status["state"] == "failed" and "no .npy" in status["error"]


def test_items_are_made_with_batch_writes_and_batch_sends(registered, trained, deployment):  # noqa: F811
    """25 item records to a BatchWriteItem, 10 messages to a SendMessageBatch (the AWS calls counted on the
    clients), then the job is running."""
    import dataclasses

    from infaas.app.offline import JobService
    from infaas.core.selection import Catalogue
    from infaas.core.settings import Settings
    from infaas.wiring import open_location
    from infaas.wiring.aws import AwsAdapters, AwsResources

    _, data, _ = trained
    _put_inputs(deployment, "many", [data.x_test[i:i + 1] for i in range(30)])
    settings = Settings.from_env()
    adapters = AwsAdapters(settings, AwsResources.from_env())
    calls: list[str] = []
    for client in (adapters.store.table.client, adapters.queue.client):
        client.meta.events.register("before-call.*.*", lambda model, **kw: calls.append(model.name))
    tenant = "iam:123456789012:user/tester"
    inline = dataclasses.replace(settings, backend="local")  # makes the items in the call, as locally
    service = JobService(adapters.store, adapters.queue, inline,
                         catalogue=lambda: Catalogue.build(adapters.store.all_variants(), settings.hardware),
                         locations=lambda uri, t: open_location(uri, settings, t))
    status = service.submit({"input": f"s3://{deployment.bucket}/{AREA}/many",
                             "output": f"s3://{deployment.bucket}/{AREA}/many-out", "architecture": "digits-logreg"},
                            tenant)
    assert status["items"] == 30 and status["state"] in ("running", "done")
    assert calls.count("BatchWriteItem") == 2 and calls.count("SendMessageBatch") == 3, calls
    assert "SendMessage" not in calls
    assert service.expand(status["id"]) == "running"  # an expand delivered again does nothing
    assert calls.count("BatchWriteItem") == 2
