"""The fleet (Auto Scaling), metrics (CloudWatch) and wiring adapters on moto,
and the autoscaler function driven by EventBridge events."""

from __future__ import annotations

import json
import signal
import time

import pytest
from aws_support import LambdaContext, load_function
from fakes import make_variant

from infaas.adapters.aws.fleet import AsgFleet, DrainWatcher
from infaas.api.aws import GatewayAuthenticator, tenant_of_arn
from infaas.core.domain import Worker
from infaas.core.errors import Unauthenticated
from infaas.core.settings import Settings, SettingsError
from infaas.wiring.aws import AwsAdapters, AwsResources


@pytest.fixture(scope="module")
def groups(deployment):
    """One group per hardware type, from launch templates, as the stack declares them."""
    ec2, autoscaling = deployment.client("ec2"), deployment.client("autoscaling")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    names = {}
    for hardware, (desired, max_size) in {"cpu": (2, 3), "gpu": (0, 2), "inferentia": (0, 1)}.items():
        template = f"{deployment.prefix}-{hardware}"
        ec2.create_launch_template(LaunchTemplateName=template,
                                   LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"})
        names[hardware] = f"{deployment.prefix}-workers-{hardware}"
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=names[hardware], MinSize=0, MaxSize=max_size, DesiredCapacity=desired,
            LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
            AvailabilityZones=["us-east-1a"],
        )
    return names


@pytest.fixture
def fleet(groups, deployment):
    return AsgFleet(groups, client=deployment.client("autoscaling"))


def _reset(fleet: AsgFleet, counts: dict[str, int]) -> None:
    for hw, n in counts.items():
        fleet.client.set_desired_capacity(AutoScalingGroupName=fleet.groups[hw], DesiredCapacity=n)


def test_fleet_reports_one_group_per_hardware_type(fleet):
    _reset(fleet, {"cpu": 2, "gpu": 0, "inferentia": 0})
    assert fleet.desired() == {"cpu": 2, "gpu": 0, "inferentia": 0}
    states = fleet.states()
    assert len(states["cpu"].in_service) == 2 and states["gpu"].max_size == 2


def test_set_desired_only_adds_capacity_within_the_maximum(fleet):
    _reset(fleet, {"cpu": 1, "gpu": 0})
    fleet.set_desired("gpu", 1)
    assert fleet.desired()["gpu"] == 1
    fleet.set_desired("gpu", 0)  # lower: left to drain()
    assert fleet.desired()["gpu"] == 1
    fleet.set_desired("cpu", 10)  # above the maximum: the maximum
    assert fleet.desired()["cpu"] == 3


def test_drain_releases_that_instance_and_lowers_the_count(fleet):
    _reset(fleet, {"cpu": 2})
    before = fleet.state("cpu")
    victim = before.in_service[0]
    fleet.drain(victim)
    after = fleet.state("cpu")
    assert after.desired == 1
    assert victim not in after.in_service
    fleet.drain("i-notinanygroup")  # unknown: nothing happens
    assert fleet.state("cpu").desired == 1


def test_unknown_hardware_type_is_not_found(fleet):
    from infaas.core.errors import NotFound

    with pytest.raises(NotFound):
        fleet.set_desired("tpu", 1)


def test_drain_watcher_drains_before_completing_the_lifecycle_action():
    steps: list[str] = []
    states = iter([None, "InService", "Terminated"])
    watcher = DrainWatcher(
        read_target_state=lambda: next(states),
        signal_worker=lambda sig: steps.append(f"signal {signal.Signals(sig).name}"),
        stop_worker=lambda: steps.append("stop"),
        complete=lambda: steps.append("complete"),
        drain_s=7.0,
        sleep=lambda s: steps.append(f"sleep {s:g}"),
    )
    watcher.run()
    assert steps == ["sleep 5", "sleep 5", "signal SIGUSR1", "sleep 7", "stop", "complete"]


def test_complete_drain_sends_a_valid_lifecycle_request():
    """moto has no CompleteLifecycleAction: botocore's Stubber checks the request
    against the service model instead."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("autoscaling", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_response("complete_lifecycle_action", {}, {
            "AutoScalingGroupName": "g", "LifecycleHookName": "infaas-drain", "InstanceId": "i-1",
            "LifecycleActionResult": "CONTINUE"})
        AsgFleet({"cpu": "g"}, client=client).complete_drain("g", "i-1")
        stub.assert_no_pending_responses()


# -- wiring ---------------------------------------------------------------------------
def test_resources_name_the_missing_variable():
    with pytest.raises(SettingsError, match="INFAAS_TABLE"):
        AwsResources.from_env({"INFAAS_BUCKET": "b", "INFAAS_QUEUE_PREFIX": "p-"})
    with pytest.raises(SettingsError, match="INFAAS_QUEUE_PREFIX"):
        AwsResources.from_env({"INFAAS_TABLE": "t", "INFAAS_BUCKET": "b"})
    with pytest.raises(SettingsError, match="INFAAS_QUEUE_WAIT_S"):
        AwsResources.from_env({"INFAAS_TABLE": "t", "INFAAS_BUCKET": "b", "INFAAS_QUEUE_PREFIX": "p-",
                               "INFAAS_QUEUE_WAIT_S": "30"})


def test_aws_adapters_work_against_the_deployment(deployment):
    adapters = AwsAdapters(Settings.from_env(), AwsResources.from_env())
    adapters.models.put("probe/hello.txt", b"hi")
    assert adapters.models.get("probe/hello.txt") == b"hi"
    adapters.queue.send("build-gpu", {"architecture": "x", "hardware": "gpu"})
    receipt, body = adapters.queue.receive("build-gpu", visibility_s=1)
    adapters.queue.ack("build-gpu", receipt)
    assert body == {"architecture": "x", "hardware": "gpu"}
    before = adapters.store.catalogue_version()
    adapters.store.put_variant(make_variant("probe"))  # every catalogue change moves the version on DynamoDB
    assert adapters.store.catalogue_version() == before + 1
    assert adapters.store.get_variant(make_variant("probe").id) == make_variant("probe")


@pytest.mark.parametrize("arn, tenant", [
    ("arn:aws:iam::123456789012:user/teams/alice", "iam:123456789012:user/alice"),
    ("arn:aws:iam::123456789012:role/alice", "iam:123456789012:role/alice"),
    ("arn:aws:sts::123456789012:assumed-role/ml-team/session-1", "iam:123456789012:role/ml-team"),
    ("arn:aws:sts::123456789012:assumed-role/ml-team/session-2", "iam:123456789012:role/ml-team"),
    ("arn:aws:iam::123456789012:root", "iam:123456789012:root"),
    ("arn:aws:iam::210987654321:user/alice", "iam:210987654321:user/alice"),
    ("arn:aws:iam::123456789012:user/bob+ci@example.com", "iam:123456789012:user/bob+ci@example.com"),
    ("arn:aws:iam::123456789012:user/bob=ci@example.com", "iam:123456789012:user/bob=ci@example.com"),
    ("arn:aws:sts::123456789012:federated-user/carol", "iam:123456789012:federated-user/carol"),
])
def test_an_iam_tenant_names_the_account_the_kind_and_the_name(arn, tenant):
    """A user and a role of one name, two accounts, names differing in one character: all distinct
    tenants, and none is a name a key's tenant can have (':' is not allowed there)."""
    assert tenant_of_arn(arn) == tenant
    who = GatewayAuthenticator()(f"aws-iam {arn}")
    assert who.tenant == tenant and who.key_id is None and who.scopes == {"query", "register", "admin"}


@pytest.mark.parametrize("arn", ["arn:aws:sts::123456789012:assumed-role", "arn:aws:iam::12345:user/short-account",
                                 "arn:aws:s3:::bucket", "arn:aws:iam::123456789012:group/admins", "not an arn"])
def test_a_principal_without_a_tenant_is_refused(arn):
    with pytest.raises(Unauthenticated):
        tenant_of_arn(arn)


def test_requests_without_a_gateway_identity_are_refused():
    for value in ("Bearer infaas_0123456789abcdef_secretsecretsecretsecret", None, "aws-key team-a query",
                  "aws-iam not-an-arn"):
        with pytest.raises(Unauthenticated):
            GatewayAuthenticator()(value)


# -- the autoscaler function ------------------------------------------------------------
ALARM_EVENT = {
    "version": "0", "id": "e1", "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
    "account": "123456789012", "region": "us-east-1", "resources": ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:x"],
    "detail": {"alarmName": "x", "state": {"value": "ALARM"}, "previousState": {"value": "OK"}},
}
SCHEDULE_EVENT = {"version": "0", "id": "e2", "detail-type": "Scheduled Event", "source": "aws.events",
                  "account": "123456789012", "region": "us-east-1", "resources": [], "detail": {}}


@pytest.fixture
def autoscaler(groups, deployment, monkeypatch):
    monkeypatch.setenv("INFAAS_FLEET_GROUPS", json.dumps(groups))
    monkeypatch.setenv("INFAAS_SCALE_COOLDOWN_S", "0")
    monkeypatch.setenv("INFAAS_SCALE_DOWN_PERIODS", "1")
    monkeypatch.setenv("INFAAS_SCALE_WORKER_RELEASE_S", "0")
    return load_function("autoscaler")


def test_autoscaler_starts_a_gpu_worker_for_waiting_build_jobs(autoscaler, fleet, deployment, capsys):
    _reset(fleet, {"cpu": 1, "gpu": 0, "inferentia": 0})
    before = set(fleet.state("gpu").in_service)  # moto may keep an instance an earlier test left
    adapters = AwsAdapters(Settings.from_env(), AwsResources.from_env())
    adapters.queue.send("build-gpu", {"architecture": "resnet", "hardware": "gpu"})
    result = autoscaler.handler(ALARM_EVENT, LambdaContext())
    assert result["applied"] and result["min_workers"]["gpu"] == 1
    assert fleet.desired()["gpu"] == 1
    # metrics in embedded metric format on stdout (adapters.aws.metrics.emf), one line per hardware type
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(line.get("DesiredWorkers") == 1 and line.get("Hardware") == "gpu" for line in lines)
    # the package's own loggers (infaas.app.autoscaler, infaas.fleet) log as Powertools JSON, with the
    # invocation's request id and keys
    import logging

    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    # (each function loaded in this process copies its Powertools config onto the logger)
    handler = next(h for h in logging.getLogger("infaas").handlers if isinstance(h.formatter, LambdaPowertoolsFormatter))
    record = logging.LogRecord("infaas.app.autoscaler", logging.INFO, __file__, 1, "scaling: x", None, None)
    doc = json.loads(handler.formatter.format(record))
    assert doc["message"] == "scaling: x" and doc["name"] == "infaas.app.autoscaler" and "function_request_id" in doc
    # the build ran (job acked): the floor goes, and the idle gpu worker is drained
    receipt, _ = adapters.queue.receive("build-gpu", visibility_s=1)
    adapters.queue.ack("build-gpu", receipt)
    (instance,) = set(fleet.state("gpu").in_service) - before
    adapters.store.heartbeat(Worker(id=instance, hardware="gpu", url="http://10.0.0.9:9000", heartbeat_at=time.time(),
                                    started_at=time.time() - 600), ttl_s=60)
    for _ in range(4):  # scale-down waits scale_down_periods consecutive periods
        result = autoscaler.handler(SCHEDULE_EVENT, LambdaContext())
        if fleet.desired()["gpu"] == 0:
            break
    assert fleet.desired()["gpu"] == 0, result
    assert instance not in fleet.state("gpu").in_service
    adapters.store.remove_worker(instance)


@pytest.fixture
def strict_autoscaler(groups, deployment, monkeypatch):
    """The autoscaler with no grace and no tolerance for silence: every period judges every instance."""
    monkeypatch.setenv("INFAAS_FLEET_GROUPS", json.dumps(groups))
    monkeypatch.setenv("INFAAS_SCALE_COOLDOWN_S", "0")
    monkeypatch.setenv("INFAAS_HEALTH_GRACE_S", "0")
    monkeypatch.setenv("INFAAS_HEALTH_MISSED_S", "30")
    return load_function("autoscaler")


def test_an_instance_whose_worker_never_heartbeats_is_marked_unhealthy(strict_autoscaler, fleet, deployment,
                                                                        capsys):
    _reset(fleet, {"cpu": 2, "gpu": 0, "inferentia": 0})
    alive, silent = fleet.state("cpu").in_service[:2]
    adapters = AwsAdapters(Settings.from_env(), AwsResources.from_env())
    adapters.store.heartbeat(Worker(id=alive, hardware="cpu", url="http://10.0.0.8:9000", heartbeat_at=time.time(),
                                    started_at=time.time() - 60), ttl_s=600)
    # both were first seen in service by a period 100 s ago (the memory the previous period left)
    adapters.store.table.put({"pk": "FLEET#health", "sk": "H",
                              "body": {i: {"seen": time.time() - 100} for i in (alive, silent)}})
    try:
        result = strict_autoscaler.handler(SCHEDULE_EVENT, LambdaContext())
        assert result["applied"], result
        assert silent in result["unhealthy"] and alive not in result["unhealthy"]
        health = {i["InstanceId"]: i["HealthStatus"] for i in deployment.client("autoscaling")
                  .describe_auto_scaling_instances(InstanceIds=[alive, silent])["AutoScalingInstances"]}
        assert health[silent].upper() == "UNHEALTHY" and health[alive].upper() == "HEALTHY", health
        # what the check remembers for the next period: the live worker's heartbeat, when each was first seen
        memory = adapters.store.table.get("FLEET#health", "H")["body"]
        assert memory[alive]["beat"] > 0 and "beat" not in memory[silent]
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert any(line.get("UnhealthyWorkers", 0) >= 1 for line in lines)
    finally:
        adapters.store.remove_worker(alive)
        client = deployment.client("autoscaling")
        for instance in (alive, silent):
            client.set_instance_health(InstanceId=instance, HealthStatus="Healthy")
