"""``LambdaFunctionTier`` (``adapters/aws/functions.py``): boto3's Lambda client against Lambda's Invoke
API on loopback (``lambda_harness.LambdaService``), in front of the inference function as deployed
(its layer, its staged code, Lambda's Python), reading the model from moto's S3.

Each outcome the port names: an answer (cold, then warm, with what the function reported and what it
costs), the function's own refusal (404 for a missing file), a function that failed (a timeout: 502
``VariantFault``), a throttle (429: 503 ``Unavailable``), an unknown function, an unreachable endpoint (502 ``WorkerFault``: not the variant's),
an event over 6 MB (413); and ``INFAAS_FUNCTION_NAMES``' validation.
"""

from __future__ import annotations

import asyncio
import json

import boto3
import numpy as np
import pytest
from botocore.config import Config
from lambda_harness import LambdaFunction, LambdaService, build_inference_assets

from infaas.adapters.aws.functions import (
    LambdaFunctionTier,
    function_names,
    lambda_client,
)
from infaas.cli import digits
from infaas.core import tier
from infaas.core.errors import (
    NotFound,
    PayloadTooLarge,
    Unavailable,
    VariantFault,
    WorkerFault,
)
from infaas.core.settings import SettingsError

KEY = "variants/tier/0123456789abcdef/tier_onnx-fp32_lambda_b8.onnx"
VID = "tier:onnx-fp32:lambda:b8"


@pytest.fixture(scope="module")
def model(deployment, tmp_path_factory):
    data = digits.split()
    (trained,) = digits.train(str(tmp_path_factory.mktemp("tier-model")), names=["logistic-regression"], data=data)
    deployment.client("s3").upload_file(trained.path, deployment.bucket, KEY)
    return trained, data


@pytest.fixture(scope="module")
def service(deployment, tmp_path_factory):
    work = tmp_path_factory.mktemp("tier-aws")
    assets = build_inference_assets(work)
    creds = {k: deployment.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                            "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL")}
    env = {**creds, "INFAAS_BUCKET": deployment.bucket}
    fns = {"infaas-inference-512": LambdaFunction("inference", assets, {**env, "INFAAS_MODEL_CACHE_DIR":
                                                                         str(work / "tmp-512")},
                                                  work / "512.log", memory_mb=512),
           # a function that cannot finish in its time: every invocation times out
           "infaas-inference-slow": LambdaFunction("inference", assets, {**env, "INFAAS_MODEL_CACHE_DIR":
                                                                          str(work / "tmp-slow")},
                                                   work / "slow.log", memory_mb=1024, timeout_s=0.05)}
    with LambdaService(fns) as svc:
        yield svc
    for fn in fns.values():
        fn.kill()


def client_for(url: str):
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=30))


def run(coro):
    return asyncio.run(coro)


def test_answers_cold_then_warm_with_what_the_function_reported(service, model):
    trained, data = model
    x = data.x_test[:4].astype(np.float32)
    ft = LambdaFunctionTier({512: "infaas-inference-512", 3008: "infaas-inference-slow"}, client=client_for(service.url))
    assert ft.function_for(300) == ("infaas-inference-512", 512) and ft.function_for(4096)[1] == 3008
    out, info = run(ft.invoke(VID, KEY, {"X": x}, memory_mb=512, query_id="q1"))
    assert out["label"].tolist() == trained.model.predict(x).tolist()
    assert info["cold"] is True and info["init_ms"] > 0 and info["function"] == "infaas-inference-512"
    assert info["memory_mb"] == 512 and info["billed_ms"] == tier.billed_ms(info["init_ms"] + info["run_ms"])
    assert info["cost"] == pytest.approx(tier.invocation_cost(info["billed_ms"], 512))
    name, event, _ = service.calls[-1]
    assert name == "infaas-inference-512" and event["variant_id"] == VID and event["id"] == "q1"
    out, info = run(ft.invoke(VID, KEY, {"X": x}, memory_mb=512, outputs=("label",)))
    assert list(out) == ["label"] and info["cold"] is False and info["init_ms"] == 0.0


def test_the_functions_refusals_and_failures_are_the_products_errors(service, model, tmp_path):
    _, data = model
    x = data.x_test[:1].astype(np.float32)
    ft = LambdaFunctionTier({512: "infaas-inference-512", 1024: "infaas-inference-slow", 2048: "infaas-nowhere"},
                            client=client_for(service.url))
    with pytest.raises(NotFound):  # the function answered 404: no such file in the bucket
        run(ft.invoke(VID, "variants/tier/none.onnx", {"X": x}, memory_mb=512))
    with pytest.raises(VariantFault, match="failed \\(Unhandled\\)"):  # timed out: Lambda reports a function error
        run(ft.invoke(VID, KEY, {"X": x}, memory_mb=1024))
    with pytest.raises(VariantFault, match="ResourceNotFoundException"):
        run(ft.invoke(VID, KEY, {"X": x}, memory_mb=2048))
    with pytest.raises(PayloadTooLarge):  # refused before it is sent
        run(ft.invoke(VID, KEY, {"X": np.zeros((8, 300_000), np.float32)}, memory_mb=512))
    with pytest.raises(PayloadTooLarge):  # and by Lambda, were it sent
        ft._invoke("infaas-inference-512", b"{" + b" " * (6 * 1024 * 1024 + 10) + b"}")
    # the only environment is busy: Lambda throttles the invocation
    fn = service.functions["infaas-inference-512"]
    with fn.lock:
        with pytest.raises(Unavailable) as exc:
            run(ft.invoke(VID, KEY, {"X": x}, memory_mb=512))
    assert exc.value.status == 503 and exc.value.retry_after_s > 0
    # nothing listens there
    from infaas.adapters.local.processes import free_port

    gone = LambdaFunctionTier({512: "infaas-inference-512"}, client=client_for(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(WorkerFault, match="invoking infaas-inference-512 failed"):  # not the variant's fault
        run(gone.invoke(VID, KEY, {"X": x}, memory_mb=512))


def test_function_names_are_validated(monkeypatch):
    assert function_names({"INFAAS_FUNCTION_NAMES": json.dumps({"512": "a", "3008": "b"})}) == {512: "a", 3008: "b"}
    for bad in ("", "{}", "[1]", json.dumps({"64": "a"}), json.dumps({"big": "a"})):
        with pytest.raises(SettingsError):
            function_names({"INFAAS_FUNCTION_NAMES": bad})
    with pytest.raises(SettingsError):
        LambdaFunctionTier({}, client=object())
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    c = lambda_client(12.0)
    assert c.meta.config.read_timeout == 12.0 and c.meta.config.retries["total_max_attempts"] == 1
