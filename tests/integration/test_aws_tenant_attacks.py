"""Tenant B (and a careless tenant A) against the AWS path, on moto only.

Everything runs in-process against the session's moto server (conftest ``deployment``): the
frontend Lambda handler with the REQUEST authorizer's context (a key tenant, as API Gateway passes
it), the offline ``JobService`` / ``run_item`` as a worker runs them, the inference function's
handler, and ``judge_health``. No worker process is started and no model is trained: the catalogue
is written straight into the table (``tests/fakes.py`` builders).

Tests named ``test_refused_*`` / ``test_holds_*`` assert an attack that is correctly refused or has no
effect; the others assert behaviour that once failed (each docstring says how).
"""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
from aws_support import LambdaContext, json_body, load_function, rest_event
from fakes import make_architecture, make_profile, make_variant

from infaas.core.keys import tenant_folder

A, B = "team-a", "team-b"  # key tenants, as `infaas tenants create` makes them
ARCH_A = "atk-a-private"
ARCH_SHARED = "atk-a-shared"
ARCH_B = "atk-b-own"


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adapters(deployment):
    from infaas.core.settings import Settings
    from infaas.wiring.aws import AwsAdapters, AwsResources

    settings = Settings.from_env()
    return AwsAdapters(settings, AwsResources.from_env())


@pytest.fixture(scope="module")
def catalogue(adapters):
    """A's private model, A's shared model, B's own model: ready cpu variants, written to the table."""
    store = adapters.store
    profile = make_profile({1: (1.0, 2.0), 32: (8.0, 10.0)})
    for name, tenant, vis in ((ARCH_A, A, "private"), (ARCH_SHARED, A, "shared"), (ARCH_B, B, "private")):
        store.create_architecture(make_architecture(name, task=f"atk/{name}", tenant=tenant, visibility=vis))
        store.put_variant(make_variant(name, task=f"atk/{name}", tenant=tenant, visibility=vis, profile=profile))
    return store


@pytest.fixture(scope="module")
def frontend(deployment, catalogue):
    return load_function("frontend")


def _as(tenant: str, event: dict, scopes: str = "query,register") -> dict:
    """The event as API Gateway passes it after the REQUEST authorizer allowed a key of ``tenant``."""
    event["requestContext"]["identity"]["userArn"] = None
    event["requestContext"]["authorizer"] = {"tenant": tenant, "scopes": scopes, "key_id": "0" * 16,
                                             "principalId": tenant}
    return event


def call(frontend, tenant: str, method: str, path: str, body=None, headers=None):
    hdrs = {"content-type": "application/json", **(headers or {})}
    raw = json.dumps(body) if body is not None and not isinstance(body, (str, bytes)) else body
    return frontend.handler(_as(tenant, rest_event(method, path, body=raw, headers=hdrs)), LambdaContext())


def area(deployment, tenant: str) -> str:
    return f"s3://{deployment.bucket}/offline/{tenant_folder(tenant)}"


def job(deployment, tenant: str, sub: str = "in", out: str = "out", arch: str | None = None, **extra) -> dict:
    return {"input": f"{area(deployment, tenant)}/{sub}", "output": f"{area(deployment, tenant)}/{out}",
            "architecture": arch or (ARCH_A if tenant == A else ARCH_B), **extra}


def put_npy(deployment, key: str, rows: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, rows)
    deployment.client("s3").put_object(Bucket=deployment.bucket, Key=key, Body=buf.getvalue())


def _expand_all(adapters, deployment):
    """What a worker does with the offline lane's expand messages (``run_item`` with its queue)."""
    from infaas.app.offline import LANE, run_item
    from infaas.core.settings import Settings
    from infaas.wiring import open_location

    settings = Settings.from_env()
    results = []
    while True:
        msg = adapters.queue.receive(LANE, visibility_s=30)
        if msg is None:
            return results
        receipt, body = msg
        if "expand" in body:
            results.append(run_item(body, adapters.store, settings, executor_for=None,
                                    locations=lambda uri, t: open_location(uri, settings, t), queue=adapters.queue))
        adapters.queue.ack(LANE, receipt)


def _service(adapters, queue=None, locations=None, clock=None):
    from infaas.app.offline import JobService
    from infaas.core.selection import Catalogue
    from infaas.core.settings import Settings
    from infaas.wiring import open_location

    settings = Settings.from_env()
    return JobService(adapters.store, queue or adapters.queue, settings,
                      catalogue=lambda: Catalogue.build(adapters.store.all_variants(), settings.hardware),
                      locations=locations or (lambda uri, t: open_location(uri, settings, t)),
                      **({"clock": clock} if clock is not None else {}))


def _status(frontend, tenant, job_id):
    return call(frontend, tenant, "GET", f"/v1/jobs/{job_id}")


def _drain_lane(adapters):
    from infaas.app.offline import LANE

    while (m := adapters.queue.receive(LANE, visibility_s=30)) is not None:
        adapters.queue.ack(LANE, m[0])


# -- 1. asynchronous submit and idempotency keys ------------------------------------------------------
def test_holds_tenant_b_reusing_tenant_as_idempotency_key_gets_its_own_job(frontend, deployment, adapters):
    _drain_lane(adapters)
    put_npy(deployment, f"offline/{A}/in/x0.npy", np.zeros((2, 64), np.float32))
    key = f"nightly-{uuid.uuid4().hex[:6]}"
    a = call(frontend, A, "POST", "/v1/jobs", job(deployment, A), {"Idempotency-Key": key})
    b = call(frontend, B, "POST", "/v1/jobs", job(deployment, B), {"Idempotency-Key": key})
    assert a["statusCode"] == b["statusCode"] == 201
    ja, jb = json_body(a), json_body(b)
    assert ja["id"] != jb["id"] and ja["tenant"] == A and jb["tenant"] == B
    # B can neither read, list nor cancel A's job, by its id or by the key
    for method, path in (("GET", f"/v1/jobs/{ja['id']}"), ("POST", f"/v1/jobs/{ja['id']}/cancel")):
        r = call(frontend, B, method, path)
        assert r["statusCode"] == 404 and json_body(r)["field"] == "job", r
    assert ja["id"] not in [j["id"] for j in json_body(call(frontend, B, "GET", "/v1/jobs"))["jobs"]]
    assert json_body(_status(frontend, A, ja["id"]))["cancelled"] is False
    _drain_lane(adapters)


@pytest.mark.parametrize("key", ["", "x" * 129, "tab\there", "nul\0", "line\nbreak"])
def test_refused_malformed_idempotency_keys_in_the_body(frontend, deployment, key):
    r = call(frontend, B, "POST", "/v1/jobs", job(deployment, B, idempotency_key=key))
    assert r["statusCode"] == 400 and json_body(r)["field"] == "idempotency_key", r


@pytest.mark.parametrize("key", [12345, ["a"], {"k": 1}, True])
def test_refused_non_string_idempotency_keys(frontend, deployment, key):
    r = call(frontend, B, "POST", "/v1/jobs", job(deployment, B, idempotency_key=key))
    assert r["statusCode"] == 400 and json_body(r)["field"] == "idempotency_key", r


def test_holds_unicode_and_separator_keys_are_distinct_jobs(frontend, deployment, adapters):
    ids = set()
    for key in ("ключ-1", "ключ-1 ", "a#b", "a\u2215b", "JOB#x", "a/../b", "K" * 128):
        r = call(frontend, B, "POST", "/v1/jobs", job(deployment, B, idempotency_key=key))
        assert r["statusCode"] == 201, (key, r)
        ids.add(json_body(r)["id"])
    assert len(ids) == 7
    _drain_lane(adapters)


def test_the_same_idempotency_key_with_a_different_body_is_refused(frontend, deployment, adapters):
    """A careless client reuses a key for a different job. It used to get 201 and the FIRST job (other input,
    other output, other model), so the second job was never run and nothing said so. Now: 409 naming
    idempotency_key when the body differs from the one the key was first used with; the same body answers
    the first job."""
    key = f"reuse-{uuid.uuid4().hex[:6]}"
    first = call(frontend, B, "POST", "/v1/jobs", job(deployment, B, sub="in1", out="out1"), {"Idempotency-Key": key})
    second = call(frontend, B, "POST", "/v1/jobs",
                  job(deployment, B, sub="in2", out="out2", arch=ARCH_SHARED), {"Idempotency-Key": key})
    _drain_lane(adapters)
    assert first["statusCode"] == 201
    got = json_body(second)
    assert second["statusCode"] in (409, 422) and got.get("field") == "idempotency_key", (
        f"a different body under the same key answered {second['statusCode']} with the old job: "
        f"input={got.get('input')!r} target={got.get('target')!r}")
    same = call(frontend, B, "POST", "/v1/jobs", job(deployment, B, sub="in1", out="out1"), {"Idempotency-Key": key})
    _drain_lane(adapters)
    assert same["statusCode"] == 201 and json_body(same)["id"] == json_body(first)["id"], same


class _FlakySend:
    """The offline lane, whose first send fails as SQS does when throttled (the SDK's error, mapped)."""

    def __init__(self, queue):
        self.queue, self.failures = queue, 1

    def send(self, lane, body):
        if self.failures:
            self.failures -= 1
            from infaas.core.errors import Unavailable

            raise Unavailable("sending a job to lane offline: ThrottlingException", retry_after_s=1.0)
        return self.queue.send(lane, body)

    def __getattr__(self, name):
        return getattr(self.queue, name)


def test_a_retry_after_a_failed_enqueue_sends_the_expand_again(deployment, adapters):
    """submit writes the job record, then sends the expand message. When the send fails (SQS throttled:
    the client gets 503 and retries with the same Idempotency-Key, as the key is meant for), the retry
    finds the record still "queued" and sends the expand message again (it used not to: the job stayed
    "queued" forever); a worker then expands it."""
    from infaas.app.offline import LANE
    from infaas.core.errors import Unavailable

    _drain_lane(adapters)
    put_npy(deployment, f"offline/{B}/in/x0.npy", np.zeros((2, 64), np.float32))
    service = _service(adapters, queue=_FlakySend(adapters.queue))
    doc = job(deployment, B)
    key = f"retry-{uuid.uuid4().hex[:6]}"
    with pytest.raises(Unavailable):
        service.submit(doc, B, key)
    again = service.submit(doc, B, key)  # the client's retry: 201 queued
    assert again["state"] == "queued"
    results = _expand_all(adapters, deployment)  # every worker drains the offline lane
    final = service.status(again["id"], B)
    assert results and final["state"] != "queued", (
        f"no expand message was ever sent for job {again['id']} (lane processed: {results}); it stays "
        f"{final['state']!r} forever")
    assert final["state"] == "running" and final["items"] >= 1, final
    _drain_lane(adapters)
    assert LANE


def test_a_job_whose_expand_message_is_dead_lettered_ends_failed_after_the_expand_timeout(deployment, adapters):
    """The expand runs on a worker with the offline lane's 30 s visibility and reads EVERY input file
    (one GetObject each, up to 100,000 files) without extending the visibility. A large job may therefore
    outlive the visibility; the message is delivered again, and after 3 receives it is dead-lettered. Same
    for a worker killed by an input that exhausts its memory. Nothing used to end the job: it answered
    "queued" forever with no error. Now a job not made into items within INFAAS_OFFLINE_EXPAND_TIMEOUT_S of
    its submission ends "failed" with the reason (read here with a clock past that bound).
    Simulated by 3 deliveries that are not acknowledged (moto's redrive, maxReceiveCount 3)."""
    from infaas.app.offline import LANE
    from infaas.core.settings import Settings

    _drain_lane(adapters)
    put_npy(deployment, f"offline/{B}/big/x0.npy", np.zeros((2, 64), np.float32))
    service = _service(adapters)
    submitted = service.submit(job(deployment, B, sub="big", out="big-out"), B)
    for _ in range(3):  # three workers took it and did not finish within the visibility
        msg = adapters.queue.receive(LANE, visibility_s=0)
        assert msg is not None and msg[1] == {"expand": submitted["id"]}
    assert adapters.queue.receive(LANE, visibility_s=0) is None  # dead-lettered: no worker will ever see it
    bound = Settings.from_env().offline_expand_timeout_s
    later = _service(adapters, clock=lambda: submitted["created_at"] + bound + 1)
    status = later.status(submitted["id"], B)
    assert status["state"] != "queued", "the job's expand message is in the DLQ; the job answers queued forever"
    assert status["state"] == "failed" and "INFAAS_OFFLINE_EXPAND_TIMEOUT_S" in status["error"], status
    assert service.status(submitted["id"], B)["state"] == "failed"  # recorded, not only answered


def test_only_one_of_two_deliveries_of_an_expand_reads_the_inputs(deployment, adapters):
    """The job is taken by a conditional write (queued -> expanding): an expand delivered again while the
    first worker is still reading the inputs does nothing, and the job is made once."""
    from infaas.core.settings import Settings
    from infaas.wiring import open_location

    _drain_lane(adapters)
    for i in range(2):
        put_npy(deployment, f"offline/{B}/twice/x{i}.npy", np.zeros((2, 64), np.float32))
    settings = Settings.from_env()
    service = _service(adapters)
    job_id = service.submit(job(deployment, B, sub="twice", out="twice-out"), B)["id"]
    seen: list[str] = []

    class SecondDeliveryWhileReading:
        def __init__(self, loc):
            self.loc, self.uri = loc, loc.uri

        def read(self, name):
            if not seen:
                seen.append(_service(adapters).expand(job_id))  # the redelivered message, on another worker
            return self.loc.read(name)

        def __getattr__(self, name):
            return getattr(self.loc, name)

    first = _service(adapters, locations=lambda uri, t: SecondDeliveryWhileReading(open_location(uri, settings, t)))
    assert first.expand(job_id) == "running"
    assert seen == ["expanding"]
    status = service.status(job_id, B)
    _drain_lane(adapters)
    assert status["state"] == "running" and status["items"] == 2 and status["left"] == 2, status


def test_a_cancel_during_expansion_is_kept(deployment, adapters):
    """expand() reads the job, reads every input (long: see above), then writes the job. It used to write
    it back UNCONDITIONALLY from the copy it read, so a cancel made meanwhile (POST /v1/jobs/{id}/cancel)
    was overwritten. Now every write is conditional on the record's version and re-applied to a fresh
    read: the job stays cancelled."""
    from infaas.core.settings import Settings
    from infaas.wiring import open_location

    _drain_lane(adapters)
    for i in range(3):
        put_npy(deployment, f"offline/{B}/cx/x{i}.npy", np.zeros((2, 64), np.float32))
    settings = Settings.from_env()
    service = _service(adapters)
    submitted = service.submit(job(deployment, B, sub="cx", out="cx-out"), B)
    job_id = submitted["id"]

    class CancelWhileListing:  # the tenant cancels while the worker is reading the inputs
        def __init__(self, loc):
            self.loc, self.uri = loc, loc.uri

        def list(self):
            names = self.loc.list()
            if not state["cancelled"]:
                state["cancelled"] = True
                assert service.cancel(job_id, B)["state"] == "cancelled"
            return names

        def __getattr__(self, name):
            return getattr(self.loc, name)

    state = {"cancelled": False}
    worker = _service(adapters, locations=lambda uri, t: CancelWhileListing(open_location(uri, settings, t)))
    worker.expand(job_id)
    status = service.status(job_id, B)
    _drain_lane(adapters)
    assert state["cancelled"] and status["state"] == "cancelled", (
        f"the tenant's cancel was lost: the job is {status['state']!r} with {status['items']} items queued")


def test_an_item_whose_input_vanished_is_failed_naming_the_file(deployment, adapters):
    """docs/offline.md: "an input that cannot be read or run marks its item failed with the error; other
    items go on". On S3 a missing (deleted) input used to raise botocore's ClientError out of run_item: the
    item was retried 3 times and dead-lettered, and the job stayed "running" with the item "left" forever.
    S3Location now maps it to NotFound (a refusal to Forbidden), so the item is failed with the file named."""
    from infaas.app.offline import LANE, run_item
    from infaas.core.settings import Settings
    from infaas.wiring import open_location

    _drain_lane(adapters)
    put_npy(deployment, f"offline/{B}/gone/x0.npy", np.zeros((2, 64), np.float32))
    settings = Settings.from_env()
    service = _service(adapters)
    submitted = service.submit(job(deployment, B, sub="gone", out="gone-out"), B)
    expand = adapters.queue.receive(LANE, visibility_s=30)  # a worker makes the item
    assert expand is not None and expand[1] == {"expand": submitted["id"]}
    assert run_item(expand[1], adapters.store, settings, executor_for=None,
                    locations=lambda uri, t: open_location(uri, settings, t), queue=adapters.queue) == "running"
    adapters.queue.ack(LANE, expand[0])
    deployment.client("s3").delete_object(Bucket=deployment.bucket, Key=f"offline/{B}/gone/x0.npy")
    msg = adapters.queue.receive(LANE, visibility_s=30)
    assert msg is not None and msg[1].get("job") == submitted["id"]
    try:
        outcome = run_item(msg[1], adapters.store, settings, executor_for=lambda v: None,
                           locations=lambda uri, t: open_location(uri, settings, t))
    except Exception as exc:  # noqa: BLE001
        outcome = f"raised {type(exc).__name__}: {str(exc)[:120]}"
    finally:
        adapters.queue.ack(LANE, msg[0])
    assert outcome == "failed", f"run_item on a vanished input: {outcome} (the item is never marked failed)"
    status = service.status(submitted["id"], B)
    assert status["state"] == "failed" and status["left"] == 0, status
    assert "x0.npy" in status["failures"][0]["error"], status["failures"]


def test_an_item_that_fails_outside_the_checks_is_failed_and_the_job_ends(deployment, adapters):
    """An input replaced after submit by one of strings (the submit checks no longer hold), and a model
    that raises something no retry mends: each item is failed with its error, not retried until it is
    dead-lettered with the job "running" for ever."""
    from infaas.app.offline import LANE, run_item
    from infaas.core.settings import Settings
    from infaas.wiring import open_location

    class Crashing:
        input_names = ("x",)

        def run(self, feed):
            raise RuntimeError("the runtime crashed")

    _drain_lane(adapters)
    put_npy(deployment, f"offline/{B}/late/x0.npy", np.zeros((2, 64), np.float32))
    put_npy(deployment, f"offline/{B}/late/x1.npy", np.zeros((2, 64), np.float32))
    settings = Settings.from_env()
    service = _service(adapters)
    submitted = service.submit(job(deployment, B, sub="late", out="late-out"), B)
    expand = adapters.queue.receive(LANE, visibility_s=30)
    run_item(expand[1], adapters.store, settings, executor_for=None,
             locations=lambda uri, t: open_location(uri, settings, t), queue=adapters.queue)
    adapters.queue.ack(LANE, expand[0])
    put_npy(deployment, f"offline/{B}/late/x0.npy", np.full((2, 64), "x"))
    outcomes = {}
    for _ in range(2):
        msg = adapters.queue.receive(LANE, visibility_s=30)
        try:
            outcomes[msg[1]["name"]] = run_item(msg[1], adapters.store, settings, executor_for=lambda v: Crashing(),
                                                locations=lambda uri, t: open_location(uri, settings, t))
        finally:
            adapters.queue.ack(LANE, msg[0])
    assert outcomes == {"x0.npy": "failed", "x1.npy": "failed"}
    status = service.status(submitted["id"], B)
    assert status["state"] == "failed" and status["left"] == 0, status
    errors = sorted(f["error"] for f in status["failures"])
    assert "RuntimeError: the runtime crashed" in errors[0] and "x0.npy" in errors[1] and "<U1" in errors[1], errors


# -- 2. per-tenant S3 areas -------------------------------------------------------------------------
def _where(deployment):
    bkt, mine = deployment.bucket, f"offline/{B}"
    return {
        "A's area": f"s3://{bkt}/offline/{A}/in",
        "dot-dot": f"s3://{bkt}/{mine}/../{A}/in",
        "trailing dot-dot": f"s3://{bkt}/{mine}/in/../..",
        "double slash": f"s3://{bkt}/{mine}//in",
        "double slash root": f"s3://{bkt}//offline/{B}/in",
        "prefix of A's name": f"s3://{bkt}/offline/{B}x/in",
        "model variants": f"s3://{bkt}/variants/{ARCH_A}",
        "architectures": f"s3://{bkt}/architectures/{ARCH_A}",
        "bucket root": f"s3://{bkt}",
        "offline root": f"s3://{bkt}/offline",
        "other bucket": f"s3://other-bucket/{mine}/in",
        "bucket look-alike": f"s3://{bkt}x/{mine}/in",
        "uppercase name": f"s3://{bkt}/offline/{B.upper()}/in",
        "fullwidth slash": f"s3://{bkt}/offline/{B}\uff0f..\uff0f{A}",
    }


@pytest.mark.parametrize("what", [
    "A's area", "dot-dot", "trailing dot-dot", "double slash", "double slash root", "prefix of A's name",
    "model variants", "architectures", "bucket root", "offline root", "other bucket", "bucket look-alike",
    "uppercase name", "fullwidth slash"])
@pytest.mark.parametrize("field", ["input", "output"])
def test_refused_locations_outside_bs_area(frontend, deployment, what, field):
    doc = job(deployment, B)
    doc[field] = _where(deployment)[what]
    r = call(frontend, B, "POST", "/v1/jobs", doc)
    body = json_body(r)
    assert r["statusCode"] == 403 and body["field"] == "location" and body["error"].startswith(f"{field}: "), (what, r)


@pytest.mark.parametrize("suffix", ["in/%2e%2e/%2e%2e/team-a/in", "in/./x", "in/.", "in..", "in/..x", "in\\..\\..\\team-a"])
def test_holds_encoded_and_dotted_names_stay_literal_keys_inside_bs_area(frontend, deployment, adapters, suffix):
    """Accepted, but S3 keys are literal: every read and write stays under offline/team-b/ (checked on the
    S3Location the worker opens for the job)."""
    from infaas.core.settings import Settings
    from infaas.wiring import open_location

    uri = f"{area(deployment, B)}/{suffix}"
    loc = open_location(uri, Settings.from_env(), B)
    assert loc.bucket == deployment.bucket and loc.prefix.startswith(f"offline/{B}/")
    put_npy(deployment, f"offline/{A}/in/secret.npy", np.ones((1, 64), np.float32))
    assert "secret.npy" not in loc.list()


def test_refused_a_location_longer_than_any_s3_key(frontend, deployment, adapters):
    """S3 keys are at most 1,024 bytes; a 5,000-character location can never be read or written, yet submit
    used to answer 201 queued (the area check is a prefix test only). Now: 400 naming the location."""
    _drain_lane(adapters)
    doc = job(deployment, B, sub="d" * 5000)
    r = call(frontend, B, "POST", "/v1/jobs", doc)
    _drain_lane(adapters)
    assert 400 <= r["statusCode"] < 500 and json_body(r).get("field") in ("location", "input"), (
        r["statusCode"], json_body(r).get("state"))


def test_holds_a_key_tenants_area_is_never_an_iam_tenants_area():
    """tenant_folder() used not to be injective: a key tenant whose name is "t-" + 24 hex digits (a legal
    name: domain.check_name, identity.create_key accept it) got exactly the folder of an IAM tenant's digest,
    so it read and wrote that IAM tenant's offline files. Now a plain name shaped like a digest folder is
    digested too."""
    from infaas.core.domain import check_name

    iam = "iam:123456789012:role/payments"
    squatter = tenant_folder(iam)  # computable by anyone who knows the role's ARN
    check_name(squatter, "tenant")  # a valid key-tenant name: `infaas tenants create t-...` accepts it
    assert tenant_folder(squatter) != tenant_folder(iam), f"key tenant {squatter!r} shares {iam}'s offline area"
    assert tenant_folder(B) == B and tenant_folder("t-not-a-digest") == "t-not-a-digest"


# -- 3. the serverless tier's inference function --------------------------------------------------
@pytest.fixture(scope="module")
def inference(deployment):
    return load_function("inference")


def test_refused_an_invocation_over_6_mb(inference):
    event = {"variant_id": f"{ARCH_A}:x", "model_key": f"variants/{ARCH_A}/m.onnx", "inputs": "A" * (6 << 20)}
    out = inference.handler(event)
    assert out["status"] == 413 and out["error"]["field"] == "inputs", out


def test_refused_missing_or_malformed_model_key_and_inputs(inference):
    for event, field in (({"variant_id": "v", "inputs": []}, "model_key"),
                         ({"variant_id": "v", "model_key": 7, "inputs": []}, "model_key"),
                         ({"variant_id": "v", "model_key": "variants/x/m.onnx"}, "inputs"),
                         ("not an object", "event")):
        out = inference.handler(event)
        assert out["status"] == 400 and out["error"]["field"] == field, (event, out)


def test_refused_a_model_key_that_names_no_file(inference):
    out = inference.handler({"variant_id": "v", "model_key": f"variants/{ARCH_A}/nothing.onnx", "inputs": []})
    assert out["status"] == 404 and out["error"]["field"] == "model_key", out


# -- 4. worker health -------------------------------------------------------------------------------
def test_holds_tenant_traffic_writes_no_worker_record_and_no_heartbeat(frontend, deployment, adapters):
    """Only workers write WORKER# records (the GSI partition "WORKERS"); a tenant's jobs, keys and names
    shaped like instance ids add none, so judge_health sees only real heartbeats."""
    import time

    from fakes import make_worker

    from infaas.adapters.aws.fleet import judge_health

    now = time.time()
    adapters.store.heartbeat(make_worker("i-0healthy", heartbeat_at=now), ttl_s=60)
    for key in ("i-0healthy", "WORKERS", "WORKER#i-0healthy"):
        call(frontend, B, "POST", "/v1/jobs", job(deployment, B, idempotency_key=key))
    call(frontend, B, "POST", "/v1/jobs", job(deployment, B, sub="i-0healthy"))
    _drain_lane(adapters)
    heartbeats = {w.id: w.heartbeat_at for w in adapters.store.workers()}
    assert heartbeats == {"i-0healthy": now}
    memory = {"i-0healthy": {"seen": now - 3600, "beat": now - 10}}
    verdict = judge_health(["i-0healthy"], heartbeats, memory, now + 1)
    assert verdict.unhealthy == ()
