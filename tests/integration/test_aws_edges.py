"""The AWS adapters' less travelled branches, against the moto server or the SDK's own errors:
throttling and unreachable endpoints translated, stale SQS receipts, jobs that are not JSON, the
expired-item race of an unconditional write, offline S3 locations, the fleet's refusals and the
on-machine drain watcher completing a real lifecycle action."""

from __future__ import annotations

import signal
import uuid

import boto3
import pytest
from aws_support import REGION
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from infaas.adapters.aws import _sdk, metrics
from infaas.adapters.aws.dynamodb import DynamoItemTable
from infaas.adapters.aws.fleet import AsgFleet, DrainWatcher, drain_watch_env, imds_get
from infaas.adapters.aws.offline import S3Location
from infaas.adapters.aws.sqs import SqsJobQueue, create_lane
from infaas.core.errors import (
    ConditionFailed,
    InfaasError,
    InvalidInput,
    NotFound,
    Unavailable,
)
from infaas.core.settings import SettingsError


def _client_error(code: str, headers: dict | None = None) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPHeaders": headers or {}}},
                       "Op")


def test_throttling_and_unreachable_endpoints_are_retryable():
    busy = _sdk.translate(_client_error("ThrottlingException", {"retry-after": "3"}), "reading")
    assert isinstance(busy, Unavailable) and busy.retry_after_s == 3.0
    garbled = _sdk.translate(_client_error("SlowDown", {"retry-after": "soon"}), "reading")
    assert isinstance(garbled, Unavailable) and garbled.retry_after_s == _sdk.DEFAULT_RETRY_AFTER_S
    other = _sdk.translate(_client_error("AccessDenied"), "reading")
    assert type(other) is InfaasError and "AccessDenied" in other.message
    assert isinstance(_sdk.translate(EndpointConnectionError(endpoint_url="http://x"), "r"), Unavailable)
    assert type(_sdk.translate(NoCredentialsError(), "r")) is InfaasError
    assert type(_sdk.translate(ValueError("x"), "r")) is InfaasError
    assert _sdk.error_code(ValueError()) == ""


def test_a_table_behind_an_unreachable_endpoint_answers_unavailable():
    from infaas.adapters.local.processes import free_port

    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=f"http://127.0.0.1:{free_port()}",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    table = DynamoItemTable("nowhere", client=client)
    with pytest.raises(Unavailable):
        table.get("a", "b")
    with pytest.raises(Unavailable):
        table.put({"pk": "a", "sk": "b", "body": {}})
    with pytest.raises(Unavailable):
        table.put({"pk": "a", "sk": "b", "body": {}}, expect_version=1)


def test_items_refuse_what_dynamodb_cannot_hold(deployment):
    table = DynamoItemTable(deployment.table, client=deployment.client("dynamodb"))
    for body in ({"x": float("nan")}, {"x": object()}):
        with pytest.raises(InvalidInput):
            table.put({"pk": "bad", "sk": "b", "body": body})
    for ttl in (True, float("inf")):
        with pytest.raises(InvalidInput):
            table.put({"pk": "bad", "sk": "b", "body": {}, "expires_at": ttl})


def test_an_expired_item_written_again_restarts_at_version_1(deployment):
    now = [1_000_000.0]
    table = DynamoItemTable(deployment.table, client=deployment.client("dynamodb"), clock=lambda: now[0])
    pk = f"exp-{uuid.uuid4().hex[:6]}"
    table.put({"pk": pk, "sk": "s", "body": {"n": 1}, "expires_at": now[0] + 5})
    assert table.put({"pk": pk, "sk": "s", "body": {"n": 2}, "expires_at": now[0] + 5})["version"] == 2
    now[0] += 10  # expired, still stored (DynamoDB deletes expired items lazily)
    assert table.get(pk, "s") is None
    assert table.put({"pk": pk, "sk": "s", "body": {"n": 3}})["version"] == 1
    assert table.get(pk, "s")["body"] == {"n": 3}
    with pytest.raises(ConditionFailed):
        table.delete(pk, "s", expect_version=0)


def test_stale_receipts_are_acknowledged_and_jobs_that_are_not_json_refused(deployment):
    sqs = deployment.client("sqs")
    lane = f"{deployment.prefix}-edge-{uuid.uuid4().hex[:4]}"
    urls = create_lane(sqs, lane)
    queue = SqsJobQueue(urls, client=sqs)
    queue.send(lane, {"a": 1})
    receipt, body = queue.receive(lane, visibility_s=0)
    assert body == {"a": 1}
    queue.ack(lane, receipt)
    queue.ack(lane, receipt)  # acknowledged twice (a redelivery's old receipt): no error
    queue.send(lane, {"b": 2})
    held, body = queue.receive(lane, visibility_s=30)
    assert body == {"b": 2}
    assert queue.extend(lane, held, 60) is True
    # 12 hours from its sending is the most SQS holds a message in flight: past it, no longer held
    assert queue.extend(lane, held, 43_200) is False
    queue.ack(lane, held)
    assert queue.extend(lane, held, 60) is False  # acknowledged: nothing to extend
    sqs.send_message(QueueUrl=urls[lane], MessageBody="not json")
    with pytest.raises(InfaasError, match="not JSON"):
        queue.receive(lane)
    sqs.delete_queue(QueueUrl=urls[lane])
    with pytest.raises(InfaasError):  # any other failure of an ack (or an extension) is reported
        queue.ack(lane, receipt)
    with pytest.raises(InfaasError):
        queue.extend(lane, receipt, 30)
    with pytest.raises(InfaasError, match="no SQS queue"):
        queue.depth("unknown-lane")


def test_offline_s3_locations(deployment):
    s3 = deployment.client("s3")
    root = f"s3://{deployment.bucket}/offline/edge-{uuid.uuid4().hex[:6]}"
    loc = S3Location(root + "/", s3)
    assert loc.list() == [] and not loc.exists("a.npy")
    loc.write_atomic("a.npy", b"1")
    loc.write_atomic("b.npy", b"22")
    s3.put_object(Bucket=deployment.bucket, Key=loc.prefix + "deeper/c.npy", Body=b"3")  # not listed: one level
    assert loc.list() == ["a.npy", "b.npy"] and loc.read("b.npy") == b"22" and loc.exists("a.npy")
    assert S3Location(f"s3://{deployment.bucket}", s3).prefix == ""
    with pytest.raises(InvalidInput):
        S3Location("s3:///x", s3)
    with pytest.raises(InvalidInput):
        S3Location(f"s3://{deployment.bucket}-missing/x", s3).list()


def test_metrics_keep_to_their_dimensions():
    with pytest.raises(ValueError):
        metrics.emf(metrics.QUERY_LATENCY, 1.0, Hardware="cpu", service="x")


@pytest.fixture
def group(deployment):
    asg, ec2 = deployment.client("autoscaling"), deployment.client("ec2")
    name = f"{deployment.prefix}-edge-{uuid.uuid4().hex[:4]}"
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={"ImageId": image,
                                                                            "InstanceType": "c6i.large"})
    asg.create_auto_scaling_group(AutoScalingGroupName=name, MinSize=0, MaxSize=2, DesiredCapacity=1,
                                  LaunchTemplate={"LaunchTemplateName": name}, AvailabilityZones=["us-east-1a"])
    asg.put_lifecycle_hook(AutoScalingGroupName=name, LifecycleHookName="infaas-drain",
                           LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", HeartbeatTimeout=120)
    return name


def test_the_fleet_refuses_what_it_does_not_manage(group, deployment):
    asg = deployment.client("autoscaling")
    with pytest.raises(InvalidInput):
        AsgFleet({}, client=asg)
    fleet = AsgFleet({"cpu": group}, client=asg)
    with pytest.raises(NotFound):
        fleet.set_desired("gpu", 1)
    with pytest.raises(NotFound):
        AsgFleet({"cpu": group + "-gone"}, client=asg).state("cpu")
    with pytest.raises(NotFound):
        AsgFleet({"cpu": group + "-gone"}, client=asg).states()
    fleet.set_desired("cpu", 0)  # lowering is drain()'s job: nothing happens
    assert fleet.desired() == {"cpu": 1}
    fleet.drain("i-0notinanygroup")  # logged, nothing released
    assert fleet.desired() == {"cpu": 1}


def test_the_drain_watcher_drains_then_completes_the_lifecycle_action(group, deployment):
    asg = deployment.client("autoscaling")
    fleet = AsgFleet({"cpu": group}, client=asg)
    (instance,) = fleet.state("cpu").in_service
    fleet.drain(instance)  # Terminating:Wait, held by the hook
    fleet.drain(instance)  # already leaving: left alone
    steps, states = [], iter([None, "InService", "Terminated"])
    watcher = DrainWatcher(
        read_target_state=lambda: next(states),
        signal_worker=lambda sig: steps.append(("signal", sig)),
        stop_worker=lambda: steps.append(("stop",)),
        complete=lambda: steps.append(("complete",)),
        drain_s=5.0, poll_s=5.0, sleep=lambda s: steps.append(("sleep", s)),
    )
    watcher.run()
    assert steps == [("sleep", 5.0), ("sleep", 5.0), ("signal", signal.SIGUSR1), ("sleep", 5.0), ("stop",),
                     ("complete",)]
    # moto's server answers CompleteLifecycleAction with a 500 page: the watcher's last step is recorded here


def test_the_drain_watchers_settings_and_metadata():
    assert drain_watch_env({"INFAAS_GROUP": "g", "INFAAS_DRAIN_S": "7"}) == {"group": "g", "drain_s": 7.0}
    assert drain_watch_env({}) == {"group": None, "drain_s": 5.0}
    with pytest.raises(SettingsError):
        drain_watch_env({"INFAAS_DRAIN_S": "-1"})
    assert imds_get("instance-id", timeout_s=0.2) is None  # no metadata service here: None, never raises


def test_drain_watch_refuses_to_run_off_an_instance(monkeypatch):
    """``python -m infaas.adapters.aws.fleet drain-watch`` needs its group and the instance metadata
    service: off an instance it stops at once, saying so."""
    from infaas.adapters.aws import fleet

    monkeypatch.delenv("INFAAS_GROUP", raising=False)
    with pytest.raises(SystemExit) as stopped:
        fleet.main(["drain-watch", "--group", "g", "--drain-s", "1"])
    assert stopped.value.code == 2
