"""Integration fixtures: AWS on a moto server, Lambda handlers called in-process.

moto cannot run Lambda code (that needs Docker), so the handlers are imported
and called as Lambda would call them: with an API Gateway (REST) or
EventBridge event and a context object. One ``ThreadedMotoServer`` on
127.0.0.1 serves the whole session, so that a worker *process* started by a
test reaches the same DynamoDB, S3 and SQS through ``AWS_ENDPOINT_URL``.
Every test module gets its own resource names, and the environment it sets
is restored when the module ends.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest
from aws_support import MODEL_KEY, OTHER_MODEL_KEY, REGION

# Fake credentials: nothing here may ever sign a request with real ones.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from infaas.adapters.local.processes import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass
class Deployment:
    """One set of resources on the moto server and the environment naming them."""

    prefix: str
    table: str
    bucket: str
    queue_prefix: str
    env: dict[str, str]
    lanes: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=REGION, endpoint_url=self.env["AWS_ENDPOINT_URL"])


@pytest.fixture(scope="module")
def deployment(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Table, bucket and build lanes as the CDK stack declares them, and the
    environment a Lambda function or a worker machine gets (set for the module)."""
    from infaas.adapters.aws.dynamodb import create_table
    from infaas.adapters.aws.s3 import create_bucket
    from infaas.adapters.aws.sqs import create_lane

    prefix = f"it{uuid.uuid4().hex[:8]}"
    cache = tmp_path_factory.mktemp("model-cache")
    env = {
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": moto_url,
        "INFAAS_BACKEND": "aws",
        "INFAAS_TABLE": f"{prefix}-metadata",
        "INFAAS_BUCKET": f"{prefix}-models",
        "INFAAS_QUEUE_PREFIX": f"{prefix}-",
        "INFAAS_MODEL_CACHE_DIR": str(cache),
        "INFAAS_BUILD_HARDWARE": "cpu",
        "INFAAS_OFFLINE_S3_ROOT": f"s3://{prefix}-models/offline",
        "POWERTOOLS_SERVICE_NAME": "infaas-test",
        "POWERTOOLS_METRICS_NAMESPACE": "Infaas",
    }
    mp = pytest.MonkeyPatch()
    for name, value in env.items():
        mp.setenv(name, value)
    try:
        d = Deployment(prefix, env["INFAAS_TABLE"], env["INFAAS_BUCKET"], env["INFAAS_QUEUE_PREFIX"], env)
        create_table(d.client("dynamodb"), d.table)
        create_bucket(d.client("s3"), d.bucket)
        sqs = d.client("sqs")
        for lane in ("build-cpu", "build-gpu", "build-inferentia", "offline"):
            d.lanes.update(create_lane(sqs, f"{d.queue_prefix}{lane}", 3))
        # the worker key, as the stack's Secrets Manager secret (cdk: Data.worker_key)
        arn = d.client("secretsmanager").create_secret(Name=f"{prefix}-worker-key",
                                                       SecretString=uuid.uuid4().hex + uuid.uuid4().hex)["ARN"]
        d.env["INFAAS_WORKER_SECRET_ARN"] = arn
        mp.setenv("INFAAS_WORKER_SECRET_ARN", arn)
        yield d
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def model_files(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A digits model (fp32 and its int8 copy) in the model bucket under ``MODEL_KEY`` and
    ``OTHER_MODEL_KEY``, for the serverless tier's inference function; key -> the local file."""
    from infaas.cli import digits
    from infaas.runtime.generate import _dynamic_int8

    out = tmp_path_factory.mktemp("digits")
    (trained,) = digits.train(str(out), names=["mlp-32"])
    int8 = out / "int8.onnx"
    int8.write_bytes(_dynamic_int8(trained.path))
    s3 = deployment.client("s3")
    files = {MODEL_KEY: trained.path, OTHER_MODEL_KEY: str(int8)}
    for key, path in files.items():
        s3.upload_file(path, deployment.bucket, key)
    return files
