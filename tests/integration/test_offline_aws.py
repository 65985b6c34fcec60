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
    assert submitted["items"] == N_FILES and submitted["rows"] == 3 * N_FILES
    deadline = time.time() + 120
    while True:
        status = json_body(frontend.handler(rest_event("GET", f"/v1/jobs/{submitted['id']}"), LambdaContext()))
        if status["state"] != "running" or time.time() > deadline:
            break
        time.sleep(0.5)
    assert status["state"] == "done" and status["done"] == N_FILES, status

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
