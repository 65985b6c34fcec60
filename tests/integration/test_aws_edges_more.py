"""More edges of the AWS adapters on moto: what an S3 failure means for an offline item, and the
selector function's counts of the serverless tier's invocations (EMF lines on stdout, as Lambda
ships them to CloudWatch)."""

from __future__ import annotations

import json

import pytest
from aws_support import load_function
from botocore.exceptions import ClientError

from infaas.adapters.aws.offline import S3Location
from infaas.core.errors import Forbidden, InvalidInput, NotFound, Unavailable


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetObject")


def test_an_s3_failure_is_a_vanished_file_a_refusal_a_retry_or_bad_input(deployment):
    loc = S3Location(f"s3://{deployment.bucket}/offline/team/in", client=deployment.client("s3"))
    with pytest.raises(NotFound) as e:
        loc.read("missing.npy")  # a real NoSuchKey from S3
    assert e.value.field == "input" and "missing.npy" in str(e.value)
    gone = S3Location("s3://no-such-bucket-here/offline/team/out", client=deployment.client("s3"))
    with pytest.raises(NotFound) as e:
        gone.write_atomic("x.npy", b"1")  # NoSuchBucket
    assert e.value.field == "output"
    assert isinstance(loc._error(_client_error("AccessDenied"), "cannot read", "a.npy", "input"), Forbidden)
    assert isinstance(loc._error(_client_error("SlowDown"), "cannot read", "a.npy", "input"), Unavailable)
    odd = loc._error(_client_error("InvalidObjectName"), "cannot write", "a.npy", "output")
    assert isinstance(odd, InvalidInput) and odd.field == "output" and "InvalidObjectName" in str(odd)
    assert not loc.exists("missing.npy")


def test_the_selector_counts_tier_invocations_errors_and_throttles(deployment, capsys):
    selector = load_function("selector")
    plane = selector.MeasuredDataPlane.__new__(selector.MeasuredDataPlane)  # only its counting is used here
    plane.function_called("v1", "ok", {"duration_ms": 12.5, "cold": True})
    plane.function_called("v1", "ok", {"duration_ms": 3.0, "cold": False})
    plane.function_called("v1", "throttled", {})
    plane.function_called("v1", "error", {})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    names = [next(m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for line in lines]
    assert names.count("FunctionInvocations") == 2 and names.count("FunctionColdStarts") == 1
    assert names.count("FunctionDuration") == 2 and names.count("FunctionThrottles") == 1
    assert names.count("FunctionErrors") == 1
    assert [line.get("Variant") for line in lines if "FunctionDuration" in line] == ["v1", "v1"]
